"""/settings end to end: a server's admins change what applies there, within the owner's
limits, and every change applies at once (in every process) and is on record."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.app import build_services
from services.errors import LimitReached
from services.generation import ResolvedModel
from services.generation.requests import JobRequest
from services.settings import load_settings
from tests.emulators.discord import Channel, DiscordEmulator, InteractionHandle, Perm, User
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotHarness
from tests.helpers import zips

SCHNELL = "black-forest-labs/flux-schnell"
DEV = "black-forest-labs/flux-dev"


def has_images(count: int = 1):
    return lambda m: len(m.attachments) == count


async def answer(handle: InteractionHandle) -> tuple[str, dict[str, Any]]:
    """The text of a private first answer, and its data."""
    callback = await handle.first_response(timeout=3)
    assert callback.data.get("flags", 0) & 64, callback.data
    return str(callback.data.get("content") or ""), callback.data


async def setting(emu: DiscordEmulator, admin: User, name: str, value: str, **kwargs: Any) -> str:
    handle = await emu.slash(
        "settings set", user=admin, options={"setting": name, "value": value}, **kwargs
    )
    return (await answer(handle))[0]


async def reset(emu: DiscordEmulator, admin: User, name: str) -> str:
    handle = await emu.slash("settings reset", user=admin, options={"setting": name})
    return (await answer(handle))[0]


async def generated(
    emu: DiscordEmulator, user: User, channel: Channel | None = None, **options: Any
) -> None:
    handle = await emu.slash(
        "generate", user=user, channel=channel, options={"prompt": "x", **options}
    )
    await handle.wait_original(has_images(), timeout=10)


async def refused(emu: DiscordEmulator, user: User, **options: Any) -> str:
    handle = await emu.slash("generate", user=user, options={"prompt": "x", **options})
    return (await answer(handle))[0]


@pytest.fixture
async def admin(discord_emu: DiscordEmulator) -> User:
    return discord_emu.add_user("admin", permissions=Perm.MANAGE_GUILD)


async def test_settings_is_for_manage_server_only(
    running: BotHarness, discord_emu: DiscordEmulator, admin: User
) -> None:
    [command] = [c for c in discord_emu.synced_commands() if c["name"] == "settings"]
    assert int(command["default_member_permissions"]) == Perm.MANAGE_GUILD
    assert {o["name"] for o in command["options"]} == {"show", "set", "reset", "history"}
    member = discord_emu.add_user("member")
    with pytest.raises(PermissionError):  # Discord does not even offer it to them
        await discord_emu.slash("settings show", user=member)
    # A server may show it to others (Integrations settings); they still cannot use it.
    discord_emu.grant_command("settings", users=[member])
    for sub, options in (
        ("show", {}),
        ("set", {"setting": "cooldown", "value": "60"}),
        ("reset", {"setting": "all"}),
        ("history", {}),
    ):
        handle = await discord_emu.slash(f"settings {sub}", user=member, options=options)
        text, _ = await answer(handle)
        assert "Manage Guild permission" in text.title() or "manage guild" in text
    assert await running.services.store.get_guild_settings(discord_emu.guild.id) == {}
    _, data = await answer(await discord_emu.slash("settings show", user=admin))
    assert data["embeds"][0]["title"] == "Settings of this server"


async def test_show_says_what_applies_and_where_it_comes_from(
    harness: BotHarness, discord_emu: DiscordEmulator, admin: User
) -> None:
    await harness.start(GENERATE_COOLDOWN_SECONDS="5", GENERATIONS_PER_USER_PER_DAY="40")
    await setting(discord_emu, admin, "generations_per_day", "12")
    _, data = await answer(await discord_emu.slash("settings show", user=admin))
    fields = {f["name"].split(" · ")[1].strip("`"): f["value"] for f in data["embeds"][0]["fields"]}
    assert (
        fields["cooldown"].startswith("5 s") and "`GENERATE_COOLDOWN_SECONDS`" in fields["cooldown"]
    )
    assert "allowed: 5 to 86400 seconds" in fields["cooldown"]
    assert fields["generations_per_day"].startswith("12")
    assert f"set here by <@{admin.id}>" in fields["generations_per_day"]
    assert "allowed: 1 to 40" in fields["generations_per_day"]
    assert fields["channels"].startswith("every channel")
    assert fields["budget"].startswith("none")
    assert fields["budget_channel"].startswith("the system channel")


async def test_cooldown_applies_at_once_and_reset_restores_it(
    running: BotHarness, discord_emu: DiscordEmulator, admin: User
) -> None:
    member = discord_emu.add_user("member")
    await generated(discord_emu, member)
    await generated(discord_emu, member)  # no cooldown by default in the tests
    text = await setting(discord_emu, admin, "cooldown", "2m")
    assert "120 s" in text
    text = await refused(discord_emu, member)
    wait = int(re.search(r"again in (\d+) s", text)[1])  # type: ignore[index]
    assert 100 < wait <= 120
    assert "0 s" in await reset(discord_emu, admin, "cooldown")
    await generated(discord_emu, member)


async def test_out_of_range_values_are_refused_with_the_range(
    harness: BotHarness, discord_emu: DiscordEmulator, admin: User
) -> None:
    await harness.start(
        GENERATE_COOLDOWN_SECONDS="10",
        GENERATIONS_PER_USER_PER_DAY="3",
        TRAININGS_PER_USER_PER_DAY="2",
        GUILD_MONTHLY_BUDGET_USD="10",
    )
    cases = {
        "cooldown": ("5", "10 to 86400 seconds"),
        "generations_per_day": ("5", "1 to 3"),
        "trainings_per_day": ("0", "1 to 2"),
        "budget": ("20", "0.01 to 10.00 USD"),
        "models": ("someone/else", f"`{SCHNELL}`"),
        "default_model": (DEV, f"`{SCHNELL}`"),
    }
    for name, (value, allowed) in cases.items():
        text = await setting(discord_emu, admin, name, value)
        assert "can't be" in text and allowed in text, (name, text)
    assert "not a valid" in await setting(discord_emu, admin, "generations_per_day", "many")
    assert "not a role" in await setting(discord_emu, admin, "train_roles", "<@&12345>")
    assert "not a channel" in await setting(discord_emu, admin, "channels", "#nowhere")
    assert await harness.services.store.get_guild_settings(discord_emu.guild.id) == {}
    assert await harness.services.guild_settings.history(discord_emu.guild.id) == []


async def test_daily_quota_applies_at_once_and_reset_restores_it(
    harness: BotHarness, discord_emu: DiscordEmulator, admin: User
) -> None:
    await harness.start(GENERATIONS_PER_USER_PER_DAY="3")
    member = discord_emu.add_user("member")
    assert "1" in await setting(discord_emu, admin, "generations_per_day", "1")
    await generated(discord_emu, member)
    assert "your 1 generations for today" in await refused(discord_emu, member)
    await reset(discord_emu, admin, "generations_per_day")
    await generated(discord_emu, member)


async def test_channel_allow_list(
    running: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    admin: User,
) -> None:
    art = discord_emu.add_channel("art")
    member = discord_emu.add_user("member")
    text = await setting(discord_emu, admin, "channels", f"<#{art.id}>")
    assert f"<#{art.id}>" in text
    for command, options in (("generate", {"prompt": "x"}), ("usage", {}), ("trainings", {})):
        handle = await discord_emu.slash(command, user=member, options=options)
        text, _ = await answer(handle)
        assert f"use me in <#{art.id}>" in text, (command, text)
    assert replicate_emu.counts["predictions_created"] == 0
    await generated(discord_emu, member, channel=art)
    # /settings works everywhere, so that the list can always be changed.
    _, data = await answer(await discord_emu.slash("settings show", user=admin))
    assert data["embeds"]
    await reset(discord_emu, admin, "channels")
    await generated(discord_emu, member)


async def test_models_offered_in_autocomplete_and_the_default_model(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    admin: User,
) -> None:
    await harness.start(GENERATE_MODELS=f"{SCHNELL},{DEV}")
    member = discord_emu.add_user("member")
    offered = await discord_emu.autocomplete("generate", "model", "", user=member)
    assert [c["value"] for c in offered] == [SCHNELL, DEV]
    await setting(discord_emu, admin, "models", DEV)
    offered = await discord_emu.autocomplete("generate", "model", "", user=member)
    assert [c["value"] for c in offered] == [DEV]
    await generated(discord_emu, member)  # no model given: the server's only one
    assert replicate_emu.last_prediction.model == DEV
    assert "Unknown model" in await refused(discord_emu, member, model=SCHNELL)
    text = await setting(discord_emu, admin, "default_model", SCHNELL)
    assert "models offered in this server" in text
    await reset(discord_emu, admin, "models")
    await setting(discord_emu, admin, "default_model", DEV)
    offered = await discord_emu.autocomplete("generate", "model", "", user=member)
    assert [c["value"] for c in offered] == [DEV, SCHNELL]
    await generated(discord_emu, member)
    assert replicate_emu.last_prediction.model == DEV
    choices = await discord_emu.autocomplete(
        "settings set", "value", "", user=admin, options={"setting": "default_model"}
    )
    assert {c["value"] for c in choices} == {SCHNELL, DEV}


async def test_roles_allowed_to_train_and_training_quota(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    admin: User,
    tmp_path: Path,
) -> None:
    await harness.start(TRAININGS_PER_USER_PER_DAY="3", TRAINING_POLL_SECONDS="0.05")
    trainers = discord_emu.add_role("trainers")
    outsider = discord_emu.add_user("outsider")
    member = discord_emu.add_user("member", roles=[trainers])
    assert f"<@&{trainers.id}>" in await setting(
        discord_emu, admin, "train_roles", f"<@&{trainers.id}>"
    )
    await setting(discord_emu, admin, "trainings_per_day", "1")
    zip_data = zips.valid_training_zip(tmp_path / "p.zip", n=3).read_bytes()

    async def train(user: User, name: str) -> InteractionHandle:
        return await discord_emu.slash(
            "train",
            user=user,
            options={"trigger_word": "TOK", "model_name": name},
            attachments={"images": ("p.zip", zip_data)},
        )

    text, _ = await answer(await train(outsider, "a"))
    assert "reserved" in text and "@trainers" in text
    started = await train(member, "b")
    await started.wait_original(lambda m: "started" in m.content, timeout=15)
    text, _ = await answer(await train(member, "c"))
    assert "your 1 trainings for today" in text
    assert replicate_emu.counts["trainings_created"] == 1


async def test_history_records_who_changed_what_and_when(
    running: BotHarness, discord_emu: DiscordEmulator, admin: User
) -> None:
    other = discord_emu.add_user("other-admin", permissions=Perm.MANAGE_GUILD)
    alerts = discord_emu.add_channel("alerts")
    await setting(discord_emu, admin, "cooldown", "30")
    await setting(discord_emu, other, "cooldown", "45")
    await setting(discord_emu, admin, "budget_channel", f"<#{alerts.id}>")
    await reset(discord_emu, other, "cooldown")
    text, _ = await answer(await discord_emu.slash("settings history", user=admin))
    lines = text.splitlines()[1:]
    assert f"<@{other.id}> reset **Cooldown** (was 45 s)" in lines[0]
    assert f"<@{admin.id}> set **Budget notices channel**: <#{alerts.id}>" in lines[1]
    assert f"<@{other.id}> set **Cooldown**: 30 s → 45 s" in lines[2]
    assert f"<@{admin.id}> set **Cooldown**: 30 s" in lines[3]
    assert all(re.search(r"<t:\d+:f>", line) for line in lines)
    changes = await running.services.guild_settings.history(discord_emu.guild.id)
    assert [(c.name, c.user_id, c.new_value) for c in changes] == [
        ("cooldown", other.id, None),
        ("budget_channel", admin.id, alerts.id),
        ("cooldown", other.id, 45.0),
        ("cooldown", admin.id, 30.0),
    ]


@pytest.mark.backends
async def test_a_second_process_sees_a_change_at_once(
    harness: BotHarness, discord_emu: DiscordEmulator, admin: User, backend: str
) -> None:
    """Another process on the same store (its own connections and notices) applies a
    change the moment the admin is told it is done."""
    await harness.start(GENERATE_MODELS=f"{SCHNELL},{DEV}")
    guild_id = discord_emu.guild.id
    member = discord_emu.add_user("member")
    await generated(discord_emu, member)
    async with aiohttp.ClientSession() as http:
        other = await build_services(
            load_settings(harness.env, env_file=None), http, with_discord=False
        )
        try:
            before = await other.guild_settings.config(guild_id)  # cached where it can be
            assert (before.cooldown, before.models) == (0.0, (SCHNELL, DEV))
            await setting(discord_emu, admin, "cooldown", "600")
            await setting(discord_emu, admin, "models", DEV)
            after = await other.guild_settings.config(guild_id)
            assert (after.cooldown, after.models) == (600.0, (DEV,))
            assert [v for _, v in await other.generations.models.choices(guild_id)] == [DEV]
            with pytest.raises(LimitReached, match=r"again in \d+ s"):
                await other.generations.create(
                    JobRequest(prompt="from elsewhere", model=ResolvedModel(DEV)),
                    user_key=f"discord:{member.id}",
                    guild_id=guild_id,
                    user_id=member.id,
                )
        finally:
            await other.aclose()
