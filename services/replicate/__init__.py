"""The Replicate layer: :class:`ReplicateService` and what it takes and gives.

``errors`` holds the domain errors, ``values`` the dataclasses and pure parsers, ``api``
the client and the translation of its failures, ``poller`` the one task that polls the
predictions followed, ``predictions`` their life from create to result, ``downloads``
the outputs, ``models`` and ``trainings`` the rest of the API, ``schemas`` what each
model takes (cached), ``service`` the facade.
"""

from services.model_inputs import (
    InputSpec,
    ModelInputs,
    OptionProblem,
    check_options,
    split_count,
)
from services.model_refs import MODEL_REF, OWNER
from services.replicate.errors import (
    AuthError,
    GenerationCanceled,
    InvalidInputError,
    InvalidModelError,
    ModelFailedError,
    ModelNotFoundError,
    NotFoundError,
    NSFWError,
    OutputExpired,
    OutputTooLarge,
    RateLimitedError,
    ReplicateServiceError,
    ReplicateUnavailable,
)
from services.replicate.models import DESTINATION_HARDWARE, MAX_UPLOAD_BYTES
from services.replicate.poller import POLL_OUTAGE_LIMIT
from services.replicate.schemas import ModelSchemas
from services.replicate.service import ReplicateService
from services.replicate.values import (
    DEFAULT_MODEL,
    TERMINAL_STATUSES,
    Account,
    GeneratedImage,
    GenerationResult,
    ModelRef,
    Progress,
    TrainingState,
    UploadedFile,
    parse_model_ref,
    parse_training_progress,
)
from services.sniff import sniff_content_type

__all__ = [
    "DEFAULT_MODEL",
    "DESTINATION_HARDWARE",
    "MAX_UPLOAD_BYTES",
    "MODEL_REF",
    "OWNER",
    "POLL_OUTAGE_LIMIT",
    "TERMINAL_STATUSES",
    "Account",
    "AuthError",
    "GeneratedImage",
    "GenerationCanceled",
    "GenerationResult",
    "InputSpec",
    "InvalidInputError",
    "InvalidModelError",
    "ModelFailedError",
    "ModelInputs",
    "ModelNotFoundError",
    "ModelRef",
    "ModelSchemas",
    "NSFWError",
    "NotFoundError",
    "OptionProblem",
    "OutputExpired",
    "OutputTooLarge",
    "Progress",
    "RateLimitedError",
    "ReplicateService",
    "ReplicateServiceError",
    "ReplicateUnavailable",
    "TrainingState",
    "UploadedFile",
    "check_options",
    "parse_model_ref",
    "parse_training_progress",
    "sniff_content_type",
    "split_count",
]
