"""The Discord emulator, driven by a minimal real discord.py bot over real sockets."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import aiohttp
import discord
import discord.http
import pytest
from discord import app_commands
from discord.ext import commands

from tests.emulators.discord import DiscordEmulator, Message, Perm
from tests.emulators.spec import SpecChecker

MODELS = ["flux-schnell", "flux-dev", "sdxl"]


class PressView(discord.ui.View):
    """Persistent: a fixed custom_id and no timeout, registered with ``add_view``."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Press", custom_id="mini:press", style=discord.ButtonStyle.primary)
    async def press(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content=f"pressed by {interaction.user.name}")


class FeedbackModal(discord.ui.Modal, title="Feedback"):
    text: discord.ui.TextInput = discord.ui.TextInput(label="Text", custom_id="fb:text")

    def __init__(self) -> None:
        super().__init__(custom_id="fb:modal")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"thanks: {self.text.value}", ephemeral=True)


class MiniBot(commands.Bot):
    def __init__(self, guild_id: int, intents: discord.Intents | None = None) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents or discord.Intents.default(),
            guild_ready_timeout=0.05,
        )
        self.guild_id = guild_id
        self.gate = asyncio.Event()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self._add_commands()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s before every IDENTIFY but the first; tests need not."""

    async def setup_hook(self) -> None:
        self.add_view(PressView())
        guild = discord.Object(self.guild_id)
        self.tree.copy_global_to(guild=guild)
        await self.tree.sync(guild=guild)
        await self.tree.sync()

    def _add_commands(self) -> None:
        tree = self.tree

        @tree.command(description="Echo text and a file")
        async def echo(
            interaction: discord.Interaction, text: str, file: discord.Attachment | None = None
        ) -> None:
            await interaction.response.defer(thinking=True)
            data = await file.read() if file else text.encode()
            await interaction.followup.send(
                f"echo {text}",
                file=discord.File(io.BytesIO(data), filename="echo.bin"),
                allowed_mentions=discord.AllowedMentions.none(),
            )
            await interaction.edit_original_response(content=f"done {text}")

        @tree.command(description="Pick a model")
        async def ask(interaction: discord.Interaction, model: str) -> None:
            await interaction.response.send_message(f"model {model}")

        @ask.autocomplete("model")
        async def ask_model(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=m, value=m) for m in MODELS if current in m]

        @tree.command(description="A persistent button")
        async def panel(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("panel", view=PressView())

        @tree.command(description="Open a modal")
        async def feedback(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(FeedbackModal())

        @tree.command(description="Say text with or without pings")
        async def say(interaction: discord.Interaction, text: str, quiet: bool = True) -> None:
            mentions = discord.AllowedMentions.none() if quiet else discord.AllowedMentions.all()
            await interaction.response.send_message(text, allowed_mentions=mentions)

        @tree.command(description="Upload a file of a given size")
        async def big(interaction: discord.Interaction, size: int) -> None:
            await interaction.response.defer()
            try:
                await interaction.followup.send(
                    file=discord.File(io.BytesIO(b"x" * size), "big.bin")
                )
            except discord.HTTPException as exc:
                await interaction.edit_original_response(content=f"error {exc.status} {exc.code}")

        @tree.command(description="Report app permissions")
        async def perms(interaction: discord.Interaction) -> None:
            p = interaction.app_permissions
            await interaction.response.send_message(
                f"attach={p.attach_files} send={p.send_messages}"
            )

        @tree.command(description="Defer, then follow up once the test opens the gate")
        async def late(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await self.gate.wait()
            try:
                await interaction.followup.send("too late")
            except discord.HTTPException as exc:
                self.errors.put_nowait(exc)

        @tree.command(description="Answer only once the test opens the gate")
        async def stall(interaction: discord.Interaction) -> None:
            await self.gate.wait()
            try:
                await interaction.response.send_message("finally")
            except discord.HTTPException as exc:
                self.errors.put_nowait(exc)

        @tree.command(description="Replace, then extend the attachments of the answer")
        async def swap(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(
                "files", file=discord.File(io.BytesIO(b"a"), "a.txt")
            )
            await interaction.edit_original_response(
                attachments=[discord.File(io.BytesIO(b"b"), "b.txt")]
            )
            message = await interaction.original_response()
            await interaction.edit_original_response(
                attachments=[*message.attachments, discord.File(io.BytesIO(b"c"), "c.txt")]
            )

        @tree.command(description="Follow-ups: send, edit, delete")
        async def multi(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("one")
            two = await interaction.followup.send("two", ephemeral=True, wait=True)
            await two.edit(content="two!")
            three = await interaction.followup.send("three", wait=True)
            await three.delete()
            original = await interaction.original_response()
            await original.edit(content="one!")

        models = app_commands.Group(name="models", description="Model commands")

        @models.command(name="show", description="Show one model")
        async def models_show(interaction: discord.Interaction, name: str) -> None:
            await interaction.response.send_message(f"showing {name}", ephemeral=True)

        tree.add_command(models)

        @tree.command(description="Needs Manage Guild")
        @app_commands.default_permissions(manage_guild=True)
        async def admin(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("admin ok")


async def _start(
    emu: DiscordEmulator, intents: discord.Intents | None = None
) -> tuple[MiniBot, asyncio.Task[None]]:
    bot = MiniBot(emu.guild.id, intents)
    task = asyncio.create_task(bot.start(emu.bot_token))
    try:
        await emu.wait_ready(timeout=10)
    except BaseException:
        await _stop(bot, task)
        raise
    return bot, task


async def _stop(bot: MiniBot, task: asyncio.Task[None]) -> None:
    await bot.close()
    async with asyncio.timeout(5):
        await task


@pytest.fixture
async def bot(discord_at_emu: DiscordEmulator) -> AsyncIterator[MiniBot]:
    mini, task = await _start(discord_at_emu)
    try:
        yield mini
    finally:
        await _stop(mini, task)


# ----------------------------------------------------------------------------- tests


async def test_login_sync_ready(discord_emu: DiscordEmulator, bot: MiniBot) -> None:
    emu = discord_emu
    assert bot.user is not None and bot.user.id == emu.bot_user.id
    assert bot.application_id == emu.application_id
    guild_names = sorted(c["name"] for c in emu.synced_commands(emu.guild.id))
    assert guild_names == sorted(c["name"] for c in emu.synced_commands())
    assert "echo" in guild_names
    assert emu.sync_counts[emu.guild.id] == 1 and emu.sync_counts[None] == 1
    echo = next(c for c in emu.synced_commands() if c["name"] == "echo")
    assert [(o["name"], o["type"]) for o in echo["options"]] == [("text", 3), ("file", 11)]
    guild = bot.get_guild(emu.guild.id)
    assert guild is not None and guild.get_channel(emu.channel.id) is not None
    assert guild.me is not None
    assert emu.identify_count == 1
    assert emu.count_requests("GET", "/users/@me") == 1


async def test_slash_defer_followup_with_file_then_edit(
    discord_emu: DiscordEmulator, bot: MiniBot
) -> None:
    emu = discord_emu
    alice = emu.add_user("alice")
    handle = await emu.slash(
        "echo", user=alice, options={"text": "hi"}, attachments={"file": ("in.bin", b"\x00data")}
    )
    first = await handle.first_response(timeout=3)
    assert first.type == 5  # a late callback would have been refused (Discord's 3 s)
    followup = await handle.wait_followup(timeout=5)
    original = await handle.wait_original(lambda m: m.content == "done hi", timeout=5)
    assert not original.loading
    # the first follow-up after a defer fills the "thinking" message; the edit keeps the file
    assert followup is original
    created, followed, edited = handle.original_history
    assert created.content == "" and created.flags & 128  # loading
    assert followed.content == "echo hi" and followed.allowed_mentions == {"parse": []}
    assert edited.content == "done hi"
    assert original.attachments == [("echo.bin", b"\x00data")]
    assert emu.attachment_downloads == ["in.bin"]
    with pytest.raises(ValueError, match="required option 'text'"):
        await emu.slash("echo", user=alice)
    with pytest.raises(LookupError, match="not synced"):
        await emu.slash("nope", user=alice)


async def test_button_press_and_persistent_view(discord_emu: DiscordEmulator, bot: MiniBot) -> None:
    emu = discord_emu
    bob = emu.add_user("bob")
    handle = await emu.slash("panel")
    panel = await handle.wait_original()
    assert [(c.custom_id, c.label, c.disabled) for c in panel.components] == [
        ("mini:press", "Press", False)
    ]
    press = await emu.press(panel, "mini:press", user=bob)
    assert (await press.first_response()).type == 7
    assert panel.content == "pressed by bob"
    assert press.original is panel


async def test_modal_submit(discord_emu: DiscordEmulator, bot: MiniBot) -> None:
    emu = discord_emu
    handle = await emu.slash("feedback")
    assert (await handle.first_response()).type == 9
    assert handle.modal is not None and handle.modal["custom_id"] == "fb:modal"
    submit = await emu.submit_modal(handle, {"fb:text": "great"})
    reply = await submit.wait_original()
    assert reply.content == "thanks: great" and reply.ephemeral


async def test_autocomplete(discord_emu: DiscordEmulator, bot: MiniBot) -> None:
    choices = await discord_emu.autocomplete("ask", "model", "flux")
    assert [c["value"] for c in choices] == ["flux-schnell", "flux-dev"]


async def test_channel_message_nonce_is_deduplicated(
    discord_emu: DiscordEmulator, bot: MiniBot
) -> None:
    emu = discord_emu
    channel = bot.get_channel(emu.channel.id)
    assert isinstance(channel, discord.TextChannel)
    first = await channel.send("hello", nonce="notify-1")
    again = await channel.send("hello", nonce="notify-1")
    assert first.id == again.id
    other = await channel.send("hello", nonce="notify-2")
    assert other.id != first.id
    assert [m.content for m in emu.messages()] == ["hello", "hello"]
    assert emu.messages()[0].nonce == "notify-1"
    found = await emu.wait_for_message(emu.channel.id, lambda m: m.nonce == "notify-2")
    assert found.id == other.id


async def test_allowed_mentions_decide_pings(discord_emu: DiscordEmulator, bot: MiniBot) -> None:
    emu = discord_emu
    carol = emu.add_user("carol")
    quiet = await emu.slash("say", options={"text": f"@everyone {carol.mention}"})
    quiet_msg = await quiet.wait_original()
    assert not quiet_msg.pinged_everyone() and quiet_msg.pinged_users() == []
    loud = await emu.slash("say", options={"text": f"@everyone {carol.mention}", "quiet": False})
    loud_msg = await loud.wait_original()
    assert loud_msg.pinged_everyone()
    assert [u.name for u in loud_msg.pinged_users()] == ["carol"]
    plain = Message(
        1, emu.channel.id, emu.bot_user, loud_msg.history, loud_msg.created_at, guild=emu.guild
    )
    assert not plain.pinged_everyone()  # without MENTION_EVERYONE the text pings nobody


async def test_gateway_drop_resume_replays_queued_events(
    discord_emu: DiscordEmulator, bot: MiniBot
) -> None:
    emu = discord_emu
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.add_listener(on_resumed)
    await emu.drop_gateway()
    handle = await emu.slash("panel")  # queued while the bot is away
    await emu.wait_ready(timeout=5)
    async with asyncio.timeout(5):
        await resumed.wait()
    assert emu.resume_count == 1 and emu.identify_count == 1
    assert (await handle.first_response(timeout=3)).type == 4
    later = await emu.slash("ask", options={"model": "sdxl"})
    assert (await later.wait_original()).content == "model sdxl"


async def test_rate_limited_followup_is_retried(discord_emu: DiscordEmulator, bot: MiniBot) -> None:
    emu = discord_emu
    rule = emu.fail_next("POST", rf"/webhooks/{emu.application_id}/[^/]+", 429, retry_after=0.05)
    handle = await emu.slash("echo", options={"text": "rl"})
    followup = await handle.wait_followup(timeout=5)
    assert followup.content == "echo rl"
    assert rule.hits == 1
    assert emu.count_requests("POST", rf"/webhooks/{emu.application_id}/[^/]+") == 2
    assert len(handle.followups) == 1


async def test_upload_over_interaction_limit_is_refused(
    discord_emu: DiscordEmulator, bot: MiniBot
) -> None:
    handle = await discord_emu.slash("big", options={"size": 2048}, attachment_size_limit=1024)
    original = await handle.wait_original(lambda m: m.content.startswith("error"))
    assert original.content == "error 413 40005"
    assert handle.followups == []


async def test_missing_permissions(discord_emu: DiscordEmulator, bot: MiniBot) -> None:
    emu = discord_emu
    locked = emu.add_channel("locked", bot_deny=Perm.ATTACH_FILES)
    handle = await emu.slash("perms", channel=locked)
    assert (await handle.wait_original()).content == "attach=False send=True"
    channel = await bot.fetch_channel(locked.id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.Forbidden) as info:
        await channel.send(file=discord.File(io.BytesIO(b"x"), "x.txt"))
    assert info.value.code == 50013
    await channel.send("text is fine")
    assert [m.content for m in emu.messages(locked)] == ["attach=False send=True", "text is fine"]


async def test_default_member_permissions(discord_emu: DiscordEmulator, bot: MiniBot) -> None:
    emu = discord_emu
    with pytest.raises(PermissionError):
        await emu.slash("admin", user=emu.add_user("pleb"))
    boss = emu.add_user("boss", permissions=Perm.MANAGE_GUILD)
    handle = await emu.slash("admin", user=boss)
    assert (await handle.wait_original()).content == "admin ok"


async def test_expired_token_and_double_ack(discord_emu: DiscordEmulator, bot: MiniBot) -> None:
    emu = discord_emu
    handle = await emu.slash("late")
    await handle.first_response()
    emu.expire(handle)
    bot.gate.set()
    async with asyncio.timeout(5):
        error = await bot.errors.get()
    assert isinstance(error, discord.HTTPException)
    assert (error.status, error.code) == (401, 50027)
    assert ("POST webhook", 50027) in handle.refused

    # a second callback for one interaction
    panel = await emu.slash("panel")
    await panel.first_response()
    async with aiohttp.ClientSession() as http:
        url = f"{emu.api_base}/interactions/{panel.id}/{panel.token}/callback?with_response=1"
        async with http.post(url, json={"type": 4, "data": {"content": "again"}}) as resp:
            assert resp.status == 400
            assert resp.headers["Content-Type"] == "application/json"
            assert (await resp.json())["code"] == 40060


async def test_unknown_route_is_recorded(discord_emu: DiscordEmulator, bot: MiniBot) -> None:
    emu = discord_emu
    route = discord.http.Route("GET", "/guilds/{guild_id}/audit-logs", guild_id=emu.guild.id)
    with pytest.raises(discord.NotFound):
        await bot.http.request(route)
    assert emu.unknown_routes == [("GET", f"/guilds/{emu.guild.id}/audit-logs")]
    emu.allow_unknown_route("GET", r"/guilds/\d+/audit-logs")
    assert emu.unexpected_unknown_routes() == []


async def test_bot_restart_keeps_persistent_buttons(discord_at_emu: DiscordEmulator) -> None:
    emu = discord_at_emu
    first, task = await _start(emu)
    panel = await (await emu.slash("panel")).wait_original()
    await _stop(first, task)
    second, task = await _start(emu)
    try:
        press = await emu.press(panel, "mini:press")
        assert (await press.first_response()).type == 7
        assert emu.identify_count == 2 and emu.sync_counts[None] == 2
    finally:
        await _stop(second, task)


async def test_bad_token_is_refused(discord_at_emu: DiscordEmulator) -> None:
    client = discord.Client(intents=discord.Intents.none())
    try:
        with pytest.raises(discord.LoginFailure):
            await client.login("wrong")
    finally:
        await client.close()


async def test_spec_violations_are_caught(discord_emu: DiscordEmulator) -> None:
    emu = discord_emu
    async with aiohttp.ClientSession() as http:
        url = f"{emu.api_base}/channels/{emu.channel.id}/messages"
        headers = {"Authorization": f"Bot {emu.bot_token}"}
        async with http.post(url, json={"content": 42}, headers=headers) as resp:
            assert resp.headers["Content-Type"] == "application/json"
    assert [v.kind for v in emu.checker.violations] == ["request"]
    emu.checker.violations.clear()

    checker = SpecChecker("discord", "discord-openapi.json", "https://discord.com", "/api/v10")
    body = json.dumps({"id": "1", "username": "x"}).encode()
    checker.check(
        "GET", "/users/@me", {}, {"Authorization": "Bot t"}, "", b"",
        200, "application/json", {"Content-Type": "application/json"}, body,
    )  # fmt: skip
    assert any("mfa_enabled" in v.message for v in checker.violations)
    with pytest.raises(AssertionError, match="spec violation"):
        checker.assert_clean()


async def test_token_age_and_answer_deadline(discord_emu: DiscordEmulator, bot: MiniBot) -> None:
    emu = discord_emu
    late = await emu.slash("late")
    stall = await emu.slash("stall")
    await late.first_response()
    emu.advance_clock(15 * 60 + 1)  # the late follow-up's token is now too old
    bot.gate.set()
    async with asyncio.timeout(5):
        errors = {(e.status, e.code) for e in [await bot.errors.get(), await bot.errors.get()]}
    assert errors == {(401, 50027), (404, 10062)}
    assert ("callback", 10062) in stall.refused and not stall.acknowledged


async def test_edit_keeps_or_replaces_attachments(
    discord_emu: DiscordEmulator, bot: MiniBot
) -> None:
    handle = await discord_emu.slash("swap")
    final = await handle.wait_original(lambda m: len(m.attachments) == 2)
    assert [v.attachments for v in final.history] == [
        [("a.txt", b"a")],
        [("b.txt", b"b")],
        [("b.txt", b"b"), ("c.txt", b"c")],
    ]
    kept = final.history[1].attachment_records[0]
    assert final.attachment_records[0] is kept  # kept by id, not re-uploaded


async def test_followups_edit_and_delete(discord_emu: DiscordEmulator, bot: MiniBot) -> None:
    handle = await discord_emu.slash("multi")
    original = await handle.wait_original(lambda m: m.content == "one!")
    assert [v.content for v in original.history] == ["one", "one!"]
    two, three = handle.followups
    assert two.ephemeral and two.content == "two!" and not two.deleted
    assert three.deleted and three.content == "three"
    assert [m.content for m in discord_emu.messages()] == ["one!", "two!"]


async def test_rate_limit_without_via_and_server_errors(
    discord_emu: DiscordEmulator, bot: MiniBot
) -> None:
    emu = discord_emu
    emu.fail_next("POST", r"/channels/\d+/messages", 429, via=False)
    channel = bot.get_channel(emu.channel.id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.HTTPException) as info:
        await channel.send("x")
    assert info.value.status == 429
    emu.fail_next("POST", r"/channels/\d+/messages", 503)  # discord.py retries only 500/502/504
    with pytest.raises(discord.DiscordServerError):
        await channel.send("x")
    assert emu.messages() == []
    assert [r.status for r in emu.requests if r.method == "POST"] == [429, 503]


async def test_replies_and_channel_rest_surface(discord_emu: DiscordEmulator, bot: MiniBot) -> None:
    """A wide sweep of channel routes; every exchange is checked against the document."""
    emu = discord_emu
    carol = emu.add_user("carol")
    said = await emu.user_message("hello bot", user=carol)
    channel = bot.get_channel(emu.channel.id)
    assert isinstance(channel, discord.TextChannel)
    async with channel.typing():
        pass
    user_msg = await channel.fetch_message(said.id)
    reply = await channel.send("hi!", reference=user_msg)
    assert [u.name for u in emu.message(reply.id).pinged_users()] == ["carol"]
    silent = await channel.send("hi!", reference=user_msg, mention_author=False)
    assert emu.message(silent.id).pinged_users() == []

    embed = (
        discord.Embed(title="t", description="d", url="https://example.com", colour=0x5865F2)
        .add_field(name="f", value="v")
        .set_footer(text="foot", icon_url="https://example.com/i.png")
        .set_author(name="me", url="https://example.com", icon_url="https://example.com/i.png")
        .set_image(url="attachment://a.png")
        .set_thumbnail(url="https://example.com/t.png")
    )
    embed.timestamp = discord.utils.utcnow()
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(label="link", url="https://example.com"))
    view.add_item(discord.ui.Button(label="dice", emoji="🎲", custom_id="dice"))
    view.add_item(discord.ui.Select(custom_id="pick", options=[discord.SelectOption(label="a")]))
    sent = await channel.send(
        embed=embed, view=view, file=discord.File(io.BytesIO(b"png"), "a.png")
    )
    stored = emu.message(sent.id)
    assert stored.embeds[0]["title"] == "t" and stored.attachments == [("a.png", b"png")]
    assert [(c.type, c.custom_id) for c in stored.components] == [
        (2, None),
        (2, "dice"),
        (3, "pick"),
    ]
    picked = await emu.select(stored, "pick", ["a"], user=carol)
    assert picked.data["values"] == ["a"]

    history = [m.id async for m in channel.history(limit=10)]
    assert history == [sent.id, silent.id, reply.id, said.id]
    edited = await sent.edit(content="edited", attachments=[])
    assert edited.attachments == [] and stored.attachments == []
    await sent.delete()
    assert stored.deleted
    with pytest.raises(discord.NotFound):
        await channel.fetch_message(sent.id)
    with pytest.raises(discord.Forbidden):
        await user_msg.edit(content="not mine")
    fetched = await bot.fetch_user(carol.id)
    assert fetched.name == "carol"
    assert {c.name for c in await bot.tree.fetch_commands()} >= {"echo", "panel"}
    assert (await bot.fetch_channel(emu.channel.id)).name == emu.channel.name
    shards, url, _ = await bot.http.get_bot_gateway()
    assert (shards, url) == (1, emu.gateway_url)


async def test_privileged_intents_chunking_and_message_content(
    discord_at_emu: DiscordEmulator,
) -> None:
    emu = discord_at_emu
    dave = emu.add_user("dave")
    bot, task = await _start(emu, discord.Intents.all())
    try:
        seen: asyncio.Queue[discord.Message] = asyncio.Queue()

        async def on_message(message: discord.Message) -> None:
            seen.put_nowait(message)

        bot.add_listener(on_message)
        async with asyncio.timeout(5):
            await bot.wait_until_ready()
        guild = bot.get_guild(emu.guild.id)
        assert guild is not None and guild.get_member(dave.id) is not None
        await emu.user_message("full text", user=dave)
        async with asyncio.timeout(5):
            message = await seen.get()
        assert message.content == "full text" and message.author.id == dave.id
        queried = await guild.query_members(user_ids=[dave.id])  # op 8 -> GUILD_MEMBERS_CHUNK
        assert [m.id for m in queried] == [dave.id]
    finally:
        await _stop(bot, task)


async def test_subcommand_reconnect_and_invalidated_session(
    discord_emu: DiscordEmulator, bot: MiniBot
) -> None:
    emu = discord_emu
    shown = await emu.slash("models show", options={"name": "flux"})
    assert (await shown.wait_original()).content == "showing flux"
    assert shown.data["options"] == [
        {"name": "show", "type": 1, "options": [{"name": "name", "type": 3, "value": "flux"}]}
    ]
    await emu.send_reconnect()  # op 7: the client resumes by itself
    await emu.wait_until(lambda: emu.resume_count == 1)
    await emu.drop_gateway(code=1000, invalidate=True)  # RESUME refused: IDENTIFY again
    await emu.wait_ready()
    assert emu.identify_count == 2
    again = await emu.slash("ask", options={"model": "flux-dev"})
    assert (await again.wait_original()).content == "model flux-dev"
