"""The naive baseline for ``python -m benchmarks.load --peer``. Not product code.

A Discord image bot written the way a typical tutorial writes one: ``commands.Bot``, one
``/generate`` app command that defers, awaits ``replicate.async_run`` (which holds an
HTTP request open until the prediction ends), downloads the outputs with the same client
and posts them as a follow-up. No queue, no limits, no store, no retries beyond the
libraries' own. It is here so that the load benchmark can measure the project's bot
against it in the same run, on the same machine, under the same load.

It reads the environment the benchmark gives the project's bot (``DISCORD_TOKEN``,
``DISCORD_API_BASE``, ``DISCORD_GATEWAY_URL``, ``REPLICATE_API_TOKEN``,
``REPLICATE_BASE_URL``) and ignores the project's settings. The emulators' CA comes from
``SSL_CERT_FILE``, as for the project's bot.
"""

from __future__ import annotations

import io
import os

import discord
import discord.gateway
import discord.http
import replicate
import yarl
from discord import app_commands
from discord.ext import commands

# Point discord.py at the emulated Discord, the same two attributes the project's bot sets.
if api_base := os.environ.get("DISCORD_API_BASE"):
    discord.http.Route.BASE = api_base.rstrip("/")
if gateway_url := os.environ.get("DISCORD_GATEWAY_URL"):
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)

MODEL = "black-forest-labs/flux-schnell"

replicate_client = replicate.Client(
    api_token=os.environ["REPLICATE_API_TOKEN"],
    base_url=os.environ.get("REPLICATE_BASE_URL") or None,
)


class PeerBot(commands.Bot):
    async def setup_hook(self) -> None:
        await self.tree.sync()


bot = PeerBot(command_prefix="!", intents=discord.Intents.default())


@bot.tree.command(name="generate", description="Generate images from a prompt")
@app_commands.describe(
    prompt="What to draw", count="How many images (1-4)", aspect_ratio="Shape of the images"
)
@app_commands.choices(
    aspect_ratio=[
        app_commands.Choice(name=ratio, value=ratio)
        for ratio in ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9")
    ]
)
async def generate(
    interaction: discord.Interaction,
    prompt: str,
    count: app_commands.Range[int, 1, 4] = 1,
    aspect_ratio: str = "1:1",
) -> None:
    await interaction.response.defer()
    try:
        output = await replicate_client.async_run(
            MODEL,
            input={
                "prompt": prompt,
                "num_outputs": count,
                "aspect_ratio": aspect_ratio,
                # The format the project asks for, so that both bots move the same bytes.
                "output_format": "png",
            },
        )
        files = [
            discord.File(io.BytesIO(await item.aread()), filename=f"image-{index}.png")
            for index, item in enumerate(output)
        ]
        await interaction.followup.send(f"**{prompt}**", files=files)
    except Exception as exc:
        await interaction.followup.send(f"❌ Something went wrong: {exc!r}")


if __name__ == "__main__":
    bot.run(os.environ["DISCORD_TOKEN"])
