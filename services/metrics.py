"""The process's Prometheus metrics, served at ``GET /metrics``.

Counted at a few narrow points: every interaction (the Discord front end), every job
end (the store says when a generation ends, once; the training service when a training
does), every request to Replicate's API (the client's response hook), every 429 from
Discord (discord.py's log of it), every webhook delivery (the dispatcher). The queue and
the running jobs are read from the store when the metrics are scraped, so every process
reports the same, shared figures.

Several processes on one machine: start each with ``PROMETHEUS_MULTIPROC_DIR`` naming
the same empty folder (wiped before they start); any of them then serves the sum of
all (prometheus-client's multi-process mode). Without it, each process serves its own.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

from services.store import Generation, Training

log = logging.getLogger(__name__)

#: Read by prometheus-client when it is first imported, as here.
MULTIPROCESS_DIR: Final = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

_LATENCY_BUCKETS: Final = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_OVERHEAD_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)

INTERACTIONS: Final = Counter(
    "imagebot_interactions", "Discord interactions received, by command", ["command"]
)
JOBS: Final = Counter("imagebot_jobs", "Jobs that ended, by kind and outcome", ["kind", "outcome"])
QUEUE_LENGTH: Final = Gauge(
    "imagebot_queue_length",
    "Generations waiting for their turn (every process)",
    multiprocess_mode="mostrecent",
)
RUNNING_JOBS: Final = Gauge(
    "imagebot_running_jobs",
    "Jobs running now (every process), by kind",
    ["kind"],
    multiprocess_mode="mostrecent",
)
JOB_LATENCY: Final = Histogram(
    "imagebot_job_latency_seconds",
    "From a job's admission to its end, by kind",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
)
JOB_OVERHEAD: Final = Histogram(
    "imagebot_job_overhead_seconds",
    "A succeeded job's time beyond the model's own (latency minus Replicate's predict_time)",
    ["kind"],
    buckets=_OVERHEAD_BUCKETS,
)
REPLICATE_REQUESTS: Final = Counter(
    "imagebot_replicate_requests",
    "Requests to Replicate's API, by route and status ('error': no answer)",
    ["route", "status"],
)
DISCORD_RATE_LIMITS: Final = Counter(
    "imagebot_discord_rate_limits",
    "429 answers from Discord (each one discord.py waited out), by scope",
    ["scope"],
)
WEBHOOK_DELIVERIES: Final = Counter(
    "imagebot_webhook_deliveries", "Replicate webhook deliveries, by result", ["result"]
)
ESTIMATED_SPEND: Final = Counter(
    "imagebot_estimated_spend_usd",
    "Estimated cost of the jobs that ended, in USD (from the price table), by kind",
    ["kind"],
)

#: What follows these parts of a path names one object: it becomes a placeholder, so that
#: the route label stays one of a few.
_NAMED_BY: Final = {"predictions": 1, "trainings": 1, "files": 1, "versions": 1, "models": 2}


def replicate_route(method: str, path: str) -> str:
    """``POST /v1/models/{}/{}/predictions`` for ``POST /v1/models/a/b/predictions``."""
    parts = [part for part in path.split("/") if part]
    route: list[str] = []
    index = 0
    while index < len(parts):
        part = parts[index]
        route.append(part)
        named = _NAMED_BY.get(part, 0)
        following = parts[index + 1 : index + 1 + named]
        if named and len(following) == named and following != ["cancel"]:
            route.extend("{}" for _ in range(named))
            index += named
        index += 1
    return f"{method} /{'/'.join(route)}"


def replicate_answered(method: str, path: str, status: int | str) -> None:
    REPLICATE_REQUESTS.labels(replicate_route(method, path), str(status)).inc()


def interaction(command: str) -> None:
    INTERACTIONS.labels(command).inc()


def discord_rate_limited(scope: str) -> None:
    DISCORD_RATE_LIMITS.labels(scope).inc()


def webhook_delivered(result: str) -> None:
    WEBHOOK_DELIVERIES.labels(result).inc()


def generation_ended(job: Generation) -> None:
    _ended("generation", job.status, job.created_at, job.finished_at, job.predict_time)
    if job.cost_usd:
        ESTIMATED_SPEND.labels("generation").inc(job.cost_usd)


def training_ended(training: Training) -> None:
    started = training.created_at
    _ended("training", training.status, started, training.completed_at, training.predict_time)
    if training.cost_usd:
        ESTIMATED_SPEND.labels("training").inc(training.cost_usd)


def _ended(
    kind: str,
    outcome: str,
    created: datetime,
    finished: datetime | None,
    predict_time: float | None,
) -> None:
    JOBS.labels(kind, outcome).inc()
    if finished is None:
        return
    latency = max(0.0, (finished - created).total_seconds())
    JOB_LATENCY.labels(kind).observe(latency)
    if outcome == "succeeded" and predict_time is not None:
        JOB_OVERHEAD.labels(kind).observe(max(0.0, latency - predict_time))


def set_activity(queued: int, running_generations: int, running_trainings: int) -> None:
    QUEUE_LENGTH.set(queued)
    RUNNING_JOBS.labels("generation").set(running_generations)
    RUNNING_JOBS.labels("training").set(running_trainings)


def render(accept: str | None = None) -> tuple[bytes, str]:
    """Every metric and its content type, in the format the scraper's ``Accept`` asks
    for (Prometheus' text format by default, OpenMetrics if asked): this process's, or
    with ``PROMETHEUS_MULTIPROC_DIR`` those of every process that shares the folder."""
    encoder, content_type = choose_encoder(accept or "")
    if MULTIPROCESS_DIR is None:
        return encoder(REGISTRY), content_type
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return encoder(registry), content_type


def process_exiting() -> None:
    """In multi-process mode, forget this process's live gauges."""
    if MULTIPROCESS_DIR is not None:
        multiprocess.mark_process_dead(os.getpid())
