"""API keys: ``python bot.py api-keys create|list|revoke`` from a shell, each key with its
own limits and usage, only its hash in the store, and ``API_TOKEN`` as the key
``default``."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from api import keys_cli
from services.store.schema import api_keys_table, generations_table
from tests.harness import ROOT
from tests.test_http_api import TOKEN, Api, ApiServer


async def run_cli(
    cwd: Path, database_url: str, *args: str, api_token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python bot.py api-keys ...`` in a process of its own (no Discord or Replicate
    token in its environment)."""
    env = {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    if api_token is not None:
        env["API_TOKEN"] = api_token
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "bot.py"), "api-keys", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def generate(api: Api, token: str, prompt: str = "a fox") -> int:
    answer = await api.call("POST", "/image/generate", token=token, json_body={"prompt": prompt})
    return answer.status


@pytest.mark.backends
async def test_create_use_quota_list_revoke(
    server: ApiServer, database_url: str, tmp_path: Path
) -> None:
    api = await server.start(DATABASE_URL=database_url, GENERATIONS_PER_USER_PER_DAY="5")
    cwd = tmp_path / "shell"
    cwd.mkdir()
    created = await run_cli(cwd, database_url, "create", "ci", "--per-day", "1", "--budget", "2")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("rib_") and len(key) > 40 and "\n" not in key
    assert "only its hash is stored" in created.stderr and key not in created.stderr

    # The running server knows the key at once: it is in the store.
    assert await generate(api, key) == 200
    refused = await api.call("POST", "/image/generate", token=key, json_body={"prompt": "b"})
    assert refused.status == 429 and "your 1 generations for today" in refused.detail
    assert await generate(api, TOKEN) == 200, "each key has its own quota"

    async with server.services.store.db.tx() as conn:
        keys = (await conn.execute(sa.select(api_keys_table))).mappings().all()
        users = set((await conn.scalars(sa.select(generations_table.c.user_key))).all())
    [stored] = keys
    assert stored["name"] == "ci" and stored["per_day"] == 1 and stored["budget_usd"] == 2.0
    assert stored["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in repr(dict(stored)) and all(key not in u for u in users)
    assert f"api-key:{stored['id']}" in users and len(users) == 2
    if database_url.startswith("sqlite"):

        def database_bytes() -> list[bytes]:
            return [p.read_bytes() for p in tmp_path.glob("bot.sqlite3*") if p.is_file()]

        files = await asyncio.to_thread(database_bytes)
        assert files and all(key.encode() not in data for data in files)

    listed = await run_cli(cwd, database_url, "list", api_token=TOKEN)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CREATED", "LIMITS", "THIS", "MONTH", "STATUS"]
    assert lines[1].startswith("default") and lines[1].endswith("API_TOKEN")
    assert lines[2].startswith("ci") and "1/day, budget $2.00/month" in lines[2]
    assert "1 job, ~$0.003" in lines[2] and lines[2].endswith("active")

    revoked = await run_cli(cwd, database_url, "revoke", "ci")
    assert revoked.returncode == 0, revoked.stderr
    answer = await api.call("POST", "/image/generate", token=key, json_body={"prompt": "c"})
    assert answer.status == 401 and answer.detail == "The API token is not valid."
    assert (await api.call("GET", "/usage", token=key)).status == 401
    listed = await run_cli(cwd, database_url, "list")
    assert "revoked" in listed.stdout.splitlines()[1]
    # The name of a revoked key can be used again, for a new key.
    _, again = await server.services.api_keys.create("ci")
    assert await generate(api, again) == 200


async def test_cli_refuses_what_it_cannot_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'keys.sqlite3'}")

    async def run(*args: str) -> tuple[int, str]:
        code = await asyncio.to_thread(keys_cli.main, list(args))
        return code, capsys.readouterr().err

    assert (await run("create", "ci"))[0] == 0
    for args, message in (
        (("create", "ci"), "exists already"),
        (("create", "no spaces"), "A key name is"),
        (("create", "default"), "API_TOKEN"),
        (("create", "x", "--per-day", "-1"), "--per-day"),
        (("revoke", "nobody"), "No active key is named 'nobody'"),
    ):
        code, err = await run(*args)
        assert code == 1 and message in err, (args, err)
    with pytest.raises(SystemExit) as usage:
        await run()
    assert usage.value.code == 2 and "create" in capsys.readouterr().err
    monkeypatch.setenv("DATABASE_URL", "mysql://nope")
    code, err = await run("list")
    assert code == 2 and "DATABASE_URL" in err


async def test_each_key_has_its_own_cooldown(server: ApiServer) -> None:
    api = await server.start(GENERATE_COOLDOWN_SECONDS="0")
    _, slow = await server.services.api_keys.create("slow", cooldown=60)
    _, fast = await server.services.api_keys.create("fast")
    assert await generate(api, slow) == 200
    answer = await api.call("POST", "/image/generate", token=slow, json_body={"prompt": "b"})
    assert answer.status == 429 and "again in" in answer.detail
    assert 50 < int(answer.headers["Retry-After"]) <= 60
    assert await generate(api, fast) == 200
    assert await generate(api, fast) == 200


async def test_keys_alone_enable_the_api(server: ApiServer) -> None:
    api = await server.start(API_TOKEN="")
    disabled = await api.call("GET", "/usage", token="rib_whatever")
    assert disabled.status == 503 and disabled.detail == "HTTP API disabled: set API_TOKEN"
    _, key = await server.services.api_keys.create("only")
    assert await generate(api, key) == 200
    wrong = await api.call("GET", "/usage", token=TOKEN)
    assert wrong.status == 401 and "WWW-Authenticate" in wrong.headers
    missing = await api.call("GET", "/usage", token=None)
    assert missing.status == 401 and "Bearer" in missing.detail
