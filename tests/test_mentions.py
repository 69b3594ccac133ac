"""User text never pings anyone: checked on the wire for every message the bot sends
with user text in it (result, failure, Details, errors, the post after a restart,
training notices, /trainings), and in the code: nothing in the Discord front end sends a
message except through ``cogs/_messages.py``.

Each test ends by looking at every version of every message the bot posted: each one
carries ``allowed_mentions`` that allow at most the requester, and no mention typed by
a user is left intact. Loosening ``allowed_mentions`` anywhere fails these tests, even
where the text would not ping (an embed, an ephemeral reply)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.store import NewGeneration, open_store
from tests.emulators.discord import DiscordEmulator, Message, MessageVersion, Perm, User
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import ROOT, BotHarness
from tests.test_generate import has_images
from tests.test_train import FAST, is_notice, start_training, training_zip

#: Calls that put a message on Discord; only cogs/_messages.py may make them.
SENDING = {"send", "send_message", "edit", "edit_message", "edit_original_response", "reply"}


class Victims:
    """Whom a hostile text tries to ping: a user, a mentionable role, everyone."""

    def __init__(self, discord_emu: DiscordEmulator) -> None:
        self.bob = discord_emu.add_user("bob")
        self.role = discord_emu.add_role("artists", mentionable=True)
        self.raw = (
            "@everyone",
            "@here",
            f"<@{self.bob.id}>",
            f"<@!{self.bob.id}>",
            f"<@&{self.role.id}>",
        )

    def text(self, prefix: str = "") -> str:
        return f"{prefix} {' '.join(self.raw)}".strip()


def versions(discord_emu: DiscordEmulator) -> Iterator[tuple[Message, MessageVersion]]:
    for message in discord_emu.messages(include_deleted=True):
        for version in message.history:
            yield message, version


def assert_only_requester(discord_emu: DiscordEmulator, requester: User, victims: Victims) -> int:
    """Every version of every message: strict ``allowed_mentions`` and no live mention of
    the victims. Returns how many versions carried text or embeds."""
    checked = 0
    for message, version in versions(discord_emu):
        content = version.content
        if not content and not version.embeds:
            continue  # a deferred "thinking" placeholder: nothing to ping with
        checked += 1
        where = f"message {message.id}: {content[:200]!r}"
        mentions = version.allowed_mentions
        assert mentions is not None, f"no allowed_mentions on {where}"
        assert mentions.get("parse") == [], where
        assert {int(u) for u in mentions.get("users", [])} <= {requester.id}, where
        assert not mentions.get("roles") and not mentions.get("replied_user"), where
        for raw in victims.raw:
            assert raw not in content, f"{raw} left intact in {where}"
        assert message.pinged_user_ids() <= {requester.id}, where
        assert not message.pinged_roles() and not message.pinged_everyone(), where
    return checked


def assert_neutral(content: str) -> None:
    """The hostile text is there, shown as typed, but inert."""
    assert "@\u200beveryone" in content and "@\u200bhere" in content, content


async def test_generate_result_failure_details_and_errors(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    victims = Victims(discord_emu)
    alice = discord_emu.add_user("alice")

    result_handle = await discord_emu.slash(
        "generate", options={"prompt": victims.text("a cat and")}, user=alice
    )
    result = await result_handle.wait_original(has_images(1), timeout=10)
    assert_neutral(result.embeds[0]["description"])

    details_id = next(c.custom_id for c in result.components if c.label == "Details")
    details = await discord_emu.press(result, details_id or "", user=alice)
    shown = await details.wait_original(timeout=5)
    assert shown.ephemeral and "**Prompt:**" in shown.content
    assert_neutral(shown.content)

    replicate_emu.fail_next_prediction(victims.text("the model says"))
    failed_handle = await discord_emu.slash("generate", options={"prompt": "x"}, user=alice)
    failed = await failed_handle.wait_original(lambda m: "❌" in m.content, timeout=10)
    assert_neutral(failed.content)

    refused_handle = await discord_emu.slash(
        "generate", options={"prompt": "x", "model": victims.text("someone/")}, user=alice
    )
    refused = await refused_handle.wait_original(timeout=5)
    assert refused.ephemeral
    assert "@\u200beveryone" in refused.content, refused.content

    assert assert_only_requester(discord_emu, alice, victims) >= 4


@pytest.mark.backends
async def test_the_post_after_a_restart(harness: BotHarness, discord_emu: DiscordEmulator) -> None:
    """A generation the previous process could not finish is reported in the channel,
    with its prompt as message text: it pings its requester and nobody else."""
    victims = Victims(discord_emu)
    alice = discord_emu.add_user("alice")
    store = await open_store(harness.env["DATABASE_URL"])
    try:
        lost = await store.create_generation(
            NewGeneration(
                user_key=f"discord:{alice.id}",
                user_id=alice.id,
                guild_id=discord_emu.guild.id,
                channel_id=discord_emu.channel.id,
                prompt=victims.text("a lighthouse and"),
                model="black-forest-labs/flux-schnell",
                params={"seed": 7, "count": 1, "aspect_ratio": "1:1"},
            )
        )
        await store.update_generation(lost.id, status="running", started_at=lost.created_at)
    finally:
        await store.close()

    await harness.start()
    reported = await discord_emu.wait_for_message(
        discord_emu.channel, lambda m: "could not be made" in m.content, timeout=15
    )
    assert_neutral(reported.content)
    assert [user.id for user in reported.pinged_users()] == [alice.id]
    assert assert_only_requester(discord_emu, alice, victims) >= 1


async def test_training_notices_trainings_and_refusals(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(**FAST)
    replicate_emu.training_mode = "manual"
    victims = Victims(discord_emu)
    alice = discord_emu.add_user("alice", permissions=Perm.MANAGE_GUILD)

    handle = await start_training(discord_emu, tmp_path, user=alice)
    started = await handle.wait_original(lambda m: "started" in m.content, timeout=10)
    assert started.ephemeral
    training = replicate_emu.last_training
    await replicate_emu.fail_training(training.id, victims.text("out of memory near"))
    notice = await discord_emu.wait_for_message(discord_emu.channel, is_notice, timeout=10)
    assert_neutral(notice.content)
    assert [user.id for user in notice.pinged_users()] == [alice.id]

    listing_handle = await discord_emu.slash("trainings", user=alice)
    listing = await listing_handle.wait_original(timeout=5)
    assert listing.ephemeral and "my-dog" in listing.content

    refused_handle = await discord_emu.slash(
        "train",
        user=alice,
        options={"trigger_word": "@everyone", "model_name": "my-cat"},
        attachments={"images": training_zip(tmp_path)},
    )
    refused = await refused_handle.wait_original(timeout=5)
    assert "@\u200beveryone" in refused.content, refused.content

    assert assert_only_requester(discord_emu, alice, victims) >= 4


def sending_calls(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SENDING
        ):
            yield f"{path.relative_to(ROOT)}:{node.lineno} calls .{node.func.attr}()"


def test_every_message_goes_through_the_one_module() -> None:
    """The guarantee is structural: a new reply that bypasses ``cogs/_messages.py``
    (and so its ``allowed_mentions``) fails here before it reaches a server."""
    paths = [ROOT / "bot.py", *sorted((ROOT / "cogs").rglob("*.py"))]
    found = [call for path in paths if path.name != "_messages.py" for call in sending_calls(path)]
    assert found == []
    assert list(sending_calls(ROOT / "cogs" / "_messages.py")), "the module itself sends"
