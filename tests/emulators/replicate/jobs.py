"""Running jobs: state changes (with their webhooks), the file inputs a prediction
reads, the outputs it makes, and the automatic runs of predictions and trainings."""

from __future__ import annotations

import asyncio
import base64
import secrets
from datetime import timedelta
from typing import Any

import aiohttp

from services.sniff import sniff_content_type
from tests.emulators.replicate.common import TERMINAL, now
from tests.emulators.replicate.images import (
    decode_data_uri,
    dimensions,
    dimensions_like,
    image_size,
    render_image,
    render_large_png,
    upscale,
)
from tests.emulators.replicate.model import Job, ReceivedImage
from tests.emulators.replicate.schemas import FORMATS, input_schema
from tests.emulators.replicate.validation import resolve
from tests.emulators.replicate.webhooks import WebhooksMixin


class JobsMixin(WebhooksMixin):
    async def _update(self, job: Job, **changes: Any) -> None:
        if job.finished and "status" in changes:
            return  # a canceled job stays canceled
        before = (job.status, job.logs, job.output)
        for key, value in changes.items():
            setattr(job, key, value)
        if "completed_at" in changes and self.predict_time is not None and job.started_at:
            # metrics.predict_time is completed_at - started_at: the scripted one.
            job.started_at = job.completed_at - timedelta(seconds=self.predict_time)  # type: ignore[operator]
        events = []
        if job.logs != before[1]:
            events.append("logs")
        if job.output is not None and job.output != before[2]:
            events.append("output")
        if job.finished and before[0] not in TERMINAL:
            events.append("completed")
            if job.kind == "prediction":
                self._running_predictions -= 1
        self._queue_webhook(job, tuple(events))
        await self._notify()

    # ------------------------------------------------------------------ file inputs

    async def _receive_images(self, job: Job) -> None:
        """Read every file input (``format: uri``) of ``job`` as the model would, into
        ``job.images`` and :attr:`received_images`; one that cannot be read makes the
        prediction fail."""
        properties = input_schema(job.schema).get("properties", {})
        for name, value in job.input.items():
            prop = properties.get(name)
            if prop is None or not isinstance(value, str):
                continue
            if resolve(job.schema, prop).get("format") != "uri":
                continue
            source, data, error = await self._read_input(name, value)
            shown = value.partition(",")[0] + ",..." if source == "data" else value
            content_type = sniff_content_type(data) if data else None
            received = ReceivedImage(job.id, name, source, shown, data, content_type, error)
            job.images[name] = received
            self.received_images.append(received)
            if error is not None and job.fail_with is None:
                job.fail_with = error
        if job.images:
            await self._notify()

    async def _read_input(self, name: str, url: str) -> tuple[str, bytes, str | None]:
        """How one file input was given, its bytes, and why it could not be read."""
        if url.startswith("data:"):
            try:
                return "data", decode_data_uri(url)[0], None
            except ValueError as exc:
                return "data", b"", f"Could not read {name}: {exc}"
        files_prefix = f"{self.base_url}/v1/files/"
        if url.startswith(files_prefix):
            stored = self.files.get(url[len(files_prefix) :].split("/", 1)[0])
            if stored is None:
                return "file", b"", f"Could not read {name}: file not found"
            return "file", stored.data, None
        if self.files_base_url and url.startswith(self.files_base_url):
            output = self._outputs.get(url[len(self.files_base_url) :].split("?", 1)[0])
            if output is None:
                return "output", b"", f"Could not read {name}: 404 Not Found"
            return "output", output[0], None
        if not url.startswith(("https://", "http://")):
            return "url", b"", f"Could not read {name}: unsupported URL scheme"
        assert self._http is not None
        try:
            async with self._http.get(
                url, timeout=aiohttp.ClientTimeout(total=self.input_fetch_timeout)
            ) as resp:
                if resp.status >= 400:
                    return "url", b"", f"Could not read {name}: HTTP {resp.status}"
                return "url", await resp.read(), None
        except (aiohttp.ClientError, TimeoutError) as exc:
            return "url", b"", f"Could not read {name}: {type(exc).__name__}"

    # ------------------------------------------------------------------ outputs

    def _store_output(self, data: bytes, content_type: str, ext: str, index: int) -> str:
        if self.output_mode == "data":
            return f"data:{content_type};base64,{base64.b64encode(data).decode()}"
        path = f"/xezq/{secrets.token_urlsafe(16)}/out-{index}.{ext}"
        self._outputs[path] = (data, content_type)
        return f"{self.files_base_url}{path}"

    async def _make_outputs(self, job: Job) -> list[str] | str:
        """The job's output: a list of image URLs, or one URL for the upscaler. Raises
        ``ValueError`` with the model's error text when the inputs do not work."""
        if job.runs == "upscaler":
            image = job.images.get("image")
            if image is None:
                raise ValueError("image is required")
            scale = float(job.input.get("scale", 4))
            data = await asyncio.to_thread(upscale, image.data, scale)
            return self._store_output(data, "image/png", "png", 0)
        fmt = str(job.input.get("output_format", "webp"))
        count = int(job.input.get("num_outputs", 1))
        width, height = dimensions(str(job.input.get("aspect_ratio", "1:1")))
        source = job.images.get("image")
        if source is not None:  # image to image: the output has the input's shape
            size = image_size(source.data)
            if size is None:
                raise ValueError("cannot identify image file")
            width, height = dimensions_like(*size)
        outputs = []
        for index in range(count):
            if job.output_bytes is not None:
                data = await asyncio.to_thread(render_large_png, job.output_bytes)
                ext, content_type = "png", "image/png"
            else:
                data = render_image(width, height, fmt, job.seed + index)
                ext, content_type = fmt, FORMATS.get(fmt, FORMATS["webp"])[1]
            outputs.append(self._store_output(data, content_type, ext, index))
        return outputs

    # ------------------------------------------------------------------ manual steps

    async def start_prediction(self, prediction_id: str) -> None:
        job = self.predictions[prediction_id]
        await self._update(
            job, status="processing", started_at=now(), logs=f"Using seed: {job.seed}\n"
        )

    async def complete_prediction(self, prediction_id: str) -> None:
        """Finish a prediction: succeeded with images, or failed if a failure was
        scripted or its inputs could not be read."""
        job = self.predictions[prediction_id]
        if job.finished:
            return
        if job.status == "starting":
            await self.start_prediction(prediction_id)
        if job.fail_with is None:
            try:
                output = await self._make_outputs(job)
            except ValueError as exc:
                job.fail_with = str(exc)
        if job.fail_with is not None:
            await self.fail_prediction(prediction_id, job.fail_with)
            return
        steps = 4
        logs = job.logs + "".join(
            f"{int(100 * n / steps):3d}%|{'#' * (10 * n // steps):<10}| {n}/{steps} "
            f"[00:0{n}<00:00, 3.21it/s]\n"
            for n in range(steps + 1)
        )
        await self._update(job, status="succeeded", output=output, logs=logs, completed_at=now())

    async def fail_prediction(self, prediction_id: str, error: str) -> None:
        job = self.predictions[prediction_id]
        if job.started_at is None:
            job.started_at = now()
        await self._update(job, status="failed", error=error, completed_at=now())

    # ------------------------------------------------------------------ manual trainings

    # trainings

    async def advance_training(self, training_id: str, step: int) -> None:
        job = self.trainings[training_id]
        if job.finished:
            return
        total = int(job.input.get("steps", 1000))
        changes: dict[str, Any] = {"step": step}
        if job.status == "starting":
            changes.update(status="processing", started_at=now())
        pct = int(100 * step / total)
        bar = "#" * (pct // 10)
        changes["logs"] = (
            job.logs
            + f"flux_train_replicate: {pct:3d}%|{bar:<10}| {step}/{total} "
            + "[00:42<05:00, 1.40it/s, lr: 4.0e-04 loss: 3.412e-01]\n"
        )
        await self._update(job, **changes)

    async def complete_training(self, training_id: str) -> None:
        """Succeed (or fail, when the input was not a zip): a new version appears on the
        destination model, and the output names it as ``owner/name:<64 hex>``."""
        job = self.trainings[training_id]
        if job.finished:
            return
        if job.fail_with is not None:
            await self.fail_training(training_id, job.fail_with)
            return
        total = int(job.input.get("steps", 1000))
        if job.step < total:
            await self.advance_training(training_id, total)
        destination = self.models[job.destination or ""]
        version = self.add_version(destination)
        weights_path = f"/xezq/{secrets.token_urlsafe(16)}/trained_model.tar"
        self._outputs[weights_path] = (b"emulated lora weights\n", "application/x-tar")
        output = {
            "version": f"{destination.ref}:{version.id}",
            "weights": f"{self.files_base_url}{weights_path}",
        }
        logs = job.logs + "Saved LoRA weights to output/flux_train_replicate\n"
        await self._update(job, status="succeeded", output=output, logs=logs, completed_at=now())

    async def fail_training(self, training_id: str, error: str) -> None:
        job = self.trainings[training_id]
        if job.started_at is None:
            job.started_at = now()
        await self._update(job, status="failed", error=error, completed_at=now())

    # ------------------------------------------------------------------ automatic runs

    async def _run_prediction(self, job: Job) -> None:
        await asyncio.sleep(0)
        await self.start_prediction(job.id)
        await asyncio.sleep(self.prediction_latency)
        await self.complete_prediction(job.id)

    async def _run_training(self, job: Job) -> None:
        await asyncio.sleep(self.training_step_delay)
        total = int(job.input.get("steps", 1000))
        await self._update(
            job,
            status="processing",
            started_at=now(),
            logs="Loading checkpoint shards: 100%|##########| 3/3 [00:02<00:00,  1.31it/s]\n",
        )
        if job.fail_with is not None:
            await asyncio.sleep(self.training_step_delay)
            await self.fail_training(job.id, job.fail_with)
            return
        for quarter in range(5):
            await asyncio.sleep(self.training_step_delay)
            await self.advance_training(job.id, total * quarter // 4)
        await self.complete_training(job.id)
