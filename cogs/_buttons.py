"""Who may press a job's buttons, and the Cancel button that /generate and /train share."""

from __future__ import annotations

from typing import ClassVar, Protocol

import discord

from cogs._common import IdButton
from cogs._messages import neutral, respond


class OwnedJob(Protocol):
    """A job as the buttons see it: who asked for it."""

    @property
    def user_id(self) -> int | None: ...


def may_act(
    interaction: discord.Interaction, owner_id: int | None, moderator_permission: str | None
) -> bool:
    """The job's requester may; so may someone with ``moderator_permission``, if given."""
    if owner_id is not None and owner_id == interaction.user.id:
        return True
    return moderator_permission is not None and bool(
        getattr(interaction.permissions, moderator_permission)
    )


class CancelJobButton(IdButton):
    """Cancel a job that waits or runs: only its requester, or someone with
    ``moderator_permission``, may. Subclasses say how to find and cancel the job."""

    action: ClassVar[str] = "cancel"
    style: ClassVar[discord.ButtonStyle] = discord.ButtonStyle.danger
    gone_text: ClassVar[str] = "This job no longer exists."
    refusal_text: ClassVar[str] = ""
    moderator_permission: ClassVar[str | None] = None

    async def find(self, interaction: discord.Interaction) -> OwnedJob | None:
        raise NotImplementedError

    async def cancel(self, interaction: discord.Interaction) -> str:
        """Cancel the job; return the reply that says what happened."""
        raise NotImplementedError

    async def run(self, interaction: discord.Interaction) -> None:
        job = await self.find(interaction)
        if job is None:
            await respond(interaction, self.gone_text, ephemeral=True)
            return
        if not may_act(interaction, job.user_id, self.moderator_permission):
            await respond(interaction, self.refusal_text, ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        await respond(interaction, neutral(await self.cancel(interaction)), ephemeral=True)
