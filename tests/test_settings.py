from __future__ import annotations

from pathlib import Path

import pytest

from services.logs import RedactSecrets
from services.settings import SettingsError, load_settings

VERSION = "0123456789abcdef" * 4
BASE = {"DISCORD_TOKEN": "discord-secret-token", "REPLICATE_API_TOKEN": "r8_secret_token"}


def test_defaults() -> None:
    s = load_settings(BASE, env_file=None)
    assert s.discord_api_base == "https://discord.com/api/v10"
    assert s.discord_gateway_url == "wss://gateway.discord.gg/"
    assert s.database_url == "sqlite:///data/bot.sqlite3"
    assert s.log_level == "INFO"
    assert s.discord_guild_id is None
    assert s.generate_models == ["black-forest-labs/flux-schnell"]
    assert s.train_role_ids == []
    assert s.trainer_version.startswith("ostris/flux-dev-lora-trainer:")
    assert s.web_enabled is False


@pytest.mark.parametrize("missing", ["DISCORD_TOKEN", "REPLICATE_API_TOKEN"])
def test_missing_required_names_the_variable(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(SettingsError) as err:
        load_settings(env, env_file=None)
    text = str(err.value)
    assert text.startswith(f"{missing} is not set")
    assert "\n" not in text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DISCORD_GUILD_ID", "my-server"),
        ("LOG_LEVEL", "loud"),
        ("TRAIN_ROLE_IDS", "12, admins"),
        ("GENERATE_MODELS", "flux"),
        ("MAX_CONCURRENT_GENERATIONS", "0"),
        ("DATABASE_URL", "mysql://x"),
        ("DISCORD_API_BASE", "localhost"),
        ("INSTANCE_ID", "shard 1"),
        ("UPSCALE_MODEL", "real-esrgan"),
        ("VARY_MODEL", "black-forest-labs/flux dev"),
        ("VARY_STRENGTH", "1.5"),
        ("UPSCALE_SCALE", "0"),
        ("MAX_INPUT_IMAGE_MB", "0"),
    ],
)
def test_invalid_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({**BASE, name: value}, env_file=None)
    assert str(err.value).startswith(f"{name} is invalid")


def test_lists_and_numbers_are_parsed() -> None:
    s = load_settings(
        {
            **BASE,
            "TRAIN_ROLE_IDS": "1, 22,333",
            "GENERATE_MODELS": f"a/b, me/lora:{VERSION}",
            "DISCORD_GUILD_ID": "123456789012345678",
            "log_level": "debug",
        },
        env_file=None,
    )
    assert s.train_role_ids == [1, 22, 333]
    assert s.generate_models == ["a/b", f"me/lora:{VERSION}"]
    assert s.discord_guild_id == 123456789012345678
    assert s.log_level == "DEBUG"


def test_image_action_settings() -> None:
    s = load_settings(BASE, env_file=None)
    assert (s.upscale_model, s.upscale_scale) == ("nightmareai/real-esrgan", 2.0)
    assert (s.vary_model, s.vary_strength) == ("black-forest-labs/flux-dev", 0.6)
    assert s.train_sample_prompt == "a photo of {trigger}"
    assert s.max_input_image_mb == 20
    changed = load_settings(
        {**BASE, "UPSCALE_MODEL": f"me/up:{VERSION}", "VARY_STRENGTH": "0.25"}, env_file=None
    )
    assert changed.upscale_model == f"me/up:{VERSION}" and changed.vary_strength == 0.25


def test_a_blank_train_sample_prompt_turns_the_sample_off(tmp_path: Path) -> None:
    assert (
        load_settings({**BASE, "TRAIN_SAMPLE_PROMPT": ""}, env_file=None).train_sample_prompt == ""
    )
    env_file = tmp_path / ".env"
    env_file.write_text("TRAIN_SAMPLE_PROMPT=\nVARY_MODEL=\n")
    s = load_settings(BASE, env_file=env_file)
    assert s.train_sample_prompt == "", "blank means off here, not the default"
    assert s.vary_model == "black-forest-labs/flux-dev", "blank means the default elsewhere"


def test_secrets_never_print() -> None:
    s = load_settings({**BASE, "API_TOKEN": "api-secret-value"}, env_file=None)
    shown = repr(s) + str(s) + s.model_dump_json()
    for secret in ("discord-secret-token", "r8_secret_token", "api-secret-value"):
        assert secret not in shown


def test_invalid_secret_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({**BASE, "DISCORD_TOKEN": "   "}, env_file=None)
    assert "DISCORD_TOKEN" in str(err.value)


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DISCORD_TOKEN=from-file\nREPLICATE_API_TOKEN=r8_file\nLOG_LEVEL=ERROR\n")
    s = load_settings({"LOG_LEVEL": "WARNING"}, env_file=env_file)
    assert s.discord_token.get_secret_value() == "from-file"
    assert s.log_level == "WARNING"


def test_redaction_filter_masks_secrets() -> None:
    import logging

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token is %s", ("sekrit-123",), None)
    RedactSecrets(["sekrit-123"]).filter(record)
    assert record.getMessage() == "token is **********"


def test_copied_env_example_with_tokens_filled_in_loads(tmp_path: Path) -> None:
    example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    filled = example.replace("DISCORD_TOKEN=\n", "DISCORD_TOKEN=abc\n").replace(
        "REPLICATE_API_TOKEN=\n", "REPLICATE_API_TOKEN=r8_abc\n"
    )
    env_file = tmp_path / ".env"
    env_file.write_text(filled)
    s = load_settings({}, env_file=env_file)
    assert s.replicate_base_url is None and s.http_port is None and s.api_token is None
    assert s.train_role_ids == [] and s.discord_guild_id is None
    assert s.database_url == "sqlite:///data/bot.sqlite3"
