"""The emulator as tests see it: one object, built from the parts of this package."""

from __future__ import annotations

from tests.emulators.replicate.controls import ControlsMixin
from tests.emulators.replicate.server import Server


class ReplicateEmulator(ControlsMixin, Server):
    """The emulated Replicate API.

    Scripting (all per instance, reset by nothing but the test):

    - ``prediction_mode`` ``"auto"`` (default; finishes after ``prediction_latency``
      seconds) or ``"manual"`` (stays ``starting`` until :meth:`start_prediction`,
      :meth:`complete_prediction`, :meth:`fail_prediction`);
    - ``training_mode`` ``"auto"`` (steps advance every ``training_step_delay`` s) or
      ``"manual"`` (:meth:`advance_training`, :meth:`complete_training`,
      :meth:`fail_training`);
    - ``output_mode`` ``"https"`` or ``"data"``; ``next_output_bytes`` makes the next
      prediction's images decodable PNGs of about that size; :meth:`expire_outputs`;
    - ``predict_time``: the ``metrics.predict_time`` every job that ends reports (None,
      the default: the time it really ran);
    - ``unknown_inputs`` ``"refuse"`` (default: 422 for an input the model does not
      declare) or ``"ignore"`` (dropped, as Replicate does);
    - :meth:`fail_next_prediction`, :meth:`rate_limit_next_create`, :meth:`error_next`,
      :meth:`hang_next` (+ :meth:`release_hangs`), :meth:`mangle_next`;
    - :meth:`add_model` / :meth:`add_version` (any Cog schema, e.g. from
      :mod:`tests.emulators.replicate.schemas`);
    - observation: ``counts``, ``requests`` [(method, path, json body)],
      ``last_prediction_input``, ``predictions``, ``trainings``, ``models``, ``files``,
      ``received_images`` and :meth:`received_image` (the file inputs predictions read),
      ``webhook_deliveries``, ``output_requests`` (headers seen by the file server),
      :meth:`wait_for`.
    """

    async def __aenter__(self) -> ReplicateEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
