"""Image generation jobs, shared by the Discord front end and the HTTP API.

- :mod:`~services.generation.service`: create (check, admit), run, cancel, shutdown;
- :mod:`~services.generation.runner`: a job's run, from its turn in the queue to its end;
- :mod:`~services.generation.requests`: what a job asks Replicate for (kinds: generate,
  vary, upscale), planned from the model's schema; :mod:`~services.generation.actions`:
  the checks before admission; :mod:`~services.generation.sources`: input images;
  :mod:`~services.generation.predict`: the predictions of one job;
- :mod:`~services.generation.admission`: every limit, used up in one step in the store;
- :mod:`~services.generation.queue`: this process's place in the queue in the store;
- :mod:`~services.generation.adoption`: jobs taken over from a process that is gone;
- :mod:`~services.generation.models`: which models may be used;
- :mod:`~services.generation.jobs`: what the front ends see of a job.
"""

from services.generation.adoption import GenerationAdoption
from services.generation.jobs import (
    CANCELED,
    HANDED_BACK,
    INTERRUPTED,
    MAX_PROMPT,
    MAX_SEED,
    JobState,
    Listener,
    Outcome,
    Reroll,
    no_progress,
)
from services.generation.models import ModelCatalog, ResolvedModel
from services.generation.service import GenerationService

__all__ = [
    "CANCELED",
    "HANDED_BACK",
    "INTERRUPTED",
    "MAX_PROMPT",
    "MAX_SEED",
    "GenerationAdoption",
    "GenerationService",
    "JobState",
    "Listener",
    "ModelCatalog",
    "Outcome",
    "Reroll",
    "ResolvedModel",
    "no_progress",
]
