"""What the front ends see of a generation job: its progress, its outcome, its request."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from services.images import FittedImage
from services.replicate import GenerationResult
from services.store import Generation

MAX_SEED: Final = 2**32 - 1
MAX_PROMPT: Final = 1000
INTERRUPTED: Final = "The bot restarted before this job finished. Please try again."
CANCELED: Final = "Canceled."
#: Shown when the process stops while the job waits or runs: another process, or this
#: one once restarted, finishes it.
HANDED_BACK: Final = (
    "The bot is restarting: your images will be posted in this channel when they are ready."
)


@dataclass
class JobState:
    """What a front end shows while a job waits or runs."""

    gen_id: str
    phase: str  # "queued", "generating", "done", "failed", "canceled", "handed back"
    position: int = 0
    queue_size: int = 0
    started_monotonic: float | None = None
    prediction_id: str | None = None
    #: Every prediction of the job, when it makes several (its first is prediction_id).
    prediction_ids: list[str] = field(default_factory=list)
    #: Every prediction has ended: only the download and the posting remain.
    finishing: bool = False

    @property
    def elapsed(self) -> float:
        if self.started_monotonic is None:
            return 0.0
        return time.monotonic() - self.started_monotonic


Listener = Callable[[JobState], Awaitable[None]]


async def no_progress(state: JobState) -> None:
    """A listener for jobs whose progress nobody watches."""


@dataclass(frozen=True)
class Reroll:
    """What to ask for to make a job's images again (with a new seed): its request as
    its requester made it (``sources`` are ``requests.ImageSource``)."""

    prompt: str
    model: str
    aspect_ratio: str | None
    count: int
    kind: str = "generate"
    strength: float | None = None
    lora_scale: float | None = None
    sources: tuple[Any, ...] = ()
    trigger_word: str | None = None
    parent: str | None = None


@dataclass
class Outcome:
    """How a job ended: ``result`` and ``images`` when it made images; else the stored
    ``generation`` says why (``status``, ``error``). ``handed_back`` when this process
    stopped before the end and left the job to another (or to itself after a restart)."""

    generation: Generation
    result: GenerationResult | None
    images: list[FittedImage] = field(default_factory=list)
    handed_back: bool = False


class JobStopped(Exception):
    """The job ended while it waited (canceled, or taken by another process)."""

    def __init__(self, generation: Generation | None) -> None:
        super().__init__(generation.status if generation else "gone")
        self.generation = generation
