"""What tests script: faults (``error_next``, ``hang_next``, ``mangle_next``, rate
limits, failures), models added directly, outputs expiring."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from tests.emulators.replicate.common import CREATE_PATHS
from tests.emulators.replicate.model import Model, Script
from tests.emulators.replicate.state import EmulatorState


class ControlsMixin(EmulatorState):
    # ------------------------------------------------------------------ faults

    def fail_next_prediction(self, error_text: str) -> None:
        """The next prediction created ends ``failed`` with ``error_text``."""
        self._next_failure = error_text

    def rate_limit_next_create(self, retry_after: float | None = 1, count: int = 1) -> None:
        """The next ``count`` creates (predictions, trainings) get a 429 with Retry-After."""
        self._scripts.append(
            Script("rate_limit", "POST", re.compile(CREATE_PATHS), count, 429, retry_after)
        )

    def error_next(
        self,
        method: str,
        path_regex: str,
        status: int = 500,
        count: int = 1,
        *,
        process: bool = False,
    ) -> None:
        """The next ``count`` requests matching (``path_regex`` full-matches the path)
        get a problem+json ``status``. With ``process=True`` the request is handled
        first (a create then does create the job) and only the answer is replaced."""
        self._scripts.append(
            Script("error", method.upper(), re.compile(path_regex), count, status, process=process)
        )

    def hang_next(
        self, method: str, path_regex: str, count: int = 1, *, process: bool = False
    ) -> None:
        """The next matching requests get no answer until :meth:`release_hangs` or close
        (they are then handled normally). ``process=True`` handles the request first
        and holds only the answer: the job exists but the caller never hears of it."""
        self._scripts.append(
            Script("hang", method.upper(), re.compile(path_regex), count, process=process)
        )

    def mangle_next(
        self, method: str, path_regex: str, fn: Callable[[Any], Any], count: int = 1
    ) -> None:
        """Pass the next matching JSON answers through ``fn`` (to produce off-spec ones)."""
        self._scripts.append(
            Script("mangle", method.upper(), re.compile(path_regex), count, mangle=fn)
        )

    def release_hangs(self) -> None:
        self._release.set()
        self._release = asyncio.Event()

    def expire_outputs(self, *, null_output: bool = True) -> None:
        """Delete every output file (downloads get 404); with ``null_output`` finished
        predictions also lose their output, as Replicate does after an hour."""
        self._outputs.clear()
        if null_output:
            for job in self.predictions.values():
                if job.finished and job.output is not None:
                    job.output = None
                    job.data_removed = True
        self._spawn(self._notify())

    # ------------------------------------------------------------------ models

    def add_model(
        self,
        owner: str,
        name: str,
        *,
        visibility: str = "private",
        with_version: bool = False,
        schema: dict[str, Any] | None = None,
        kind: str = "image",
        official: bool = False,
    ) -> Model:
        """Create a model directly (no request), optionally with one version: a trained
        one (the LoRA schema) unless ``schema`` (a Cog document) and ``kind`` say
        otherwise. ``official`` models are run by name, the others by version."""
        model = Model(owner, name, visibility=visibility, official=official)
        if with_version or schema is not None:
            self.add_version(model, schema=schema, kind=kind)
        self.models[model.ref] = model
        return model
