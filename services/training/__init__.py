"""LoRA trainings, shared by the Discord front end and the HTTP API.

- :mod:`~services.training.service`: :class:`TrainingService`, what the front ends call;
- :mod:`~services.training.checks`: names, roles, limits, destination, upload and zip;
- :mod:`~services.training.starter`: admission and the start on Replicate;
- :mod:`~services.training.tracker`: polls and webhooks recorded, the status message and
  the final notice (once), the trainings a previous process left picked up again;
- :mod:`~services.training.states`: final states, progress and time left.
"""

from services.training.checks import MODEL_NAME_RULE, check_names, training_refusal
from services.training.service import TrainingService
from services.training.starter import WEBHOOK_EVENTS, StartedTraining
from services.training.states import ERROR_TEXT, FINAL, eta_seconds, progress_bar
from services.training.tracker import TrainingNotifier

__all__ = [
    "ERROR_TEXT",
    "FINAL",
    "MODEL_NAME_RULE",
    "WEBHOOK_EVENTS",
    "StartedTraining",
    "TrainingNotifier",
    "TrainingService",
    "check_names",
    "eta_seconds",
    "progress_bar",
    "training_refusal",
]
