"""Persistent state of the bot and the HTTP API: the only package that contains SQL.

Everything that must survive a crash lives here (generation and training jobs, trained models,
webhook ids already processed, small key/value state), so that a process killed at any moment
can resume from the database alone.

Backends
    SQLite (``sqlite+aiosqlite``) is the embedded default; PostgreSQL (``postgresql+asyncpg``)
    is meant for several processes or shards sharing one database. Only SQLAlchemy Core
    constructs are used. The two dialect-specific spots are the ``INSERT … ON CONFLICT`` upserts
    (both dialects implement them with the same semantics) and the advisory lock that serialises
    migrations on PostgreSQL.

Exactly-once
    State changes that must happen once ("send the training notification", "poll this training
    now") are single ``UPDATE … WHERE <condition>`` statements whose rowcount says whether this
    caller won. They are safe across coroutines, processes and hosts.

Times
    All datetimes go in and come out timezone-aware in UTC. Naive datetimes are rejected: a naive
    value is ambiguous and would be stored wrongly without anyone noticing.

Layout
    ``records`` (what goes in and comes out), ``migrations`` (the schema as ordered steps) and
    ``schema`` (the tables they give), the engine layer (``url``, ``sqlite``, ``writer``,
    ``engine``), the queries by topic (``meta``, ``generations``, ``trainings``, ``models``,
    ``webhooks``) and the ``facade`` that combines them into :class:`Store`.
"""

from services.store.facade import Store, open_store
from services.store.migrations import LATEST_SCHEMA_VERSION, MIGRATIONS
from services.store.records import (
    ACTIVE_GENERATION_STATUSES,
    ACTIVE_TRAINING_STATUSES,
    GENERATION_STATUSES,
    SOURCES,
    TRAINING_STATUSES,
    Generation,
    GenerationStatus,
    NewGeneration,
    NewTraining,
    Source,
    TrainedModel,
    Training,
    TrainingStatus,
)
from services.store.url import normalize_database_url

__all__ = [
    "ACTIVE_GENERATION_STATUSES",
    "ACTIVE_TRAINING_STATUSES",
    "GENERATION_STATUSES",
    "LATEST_SCHEMA_VERSION",
    "MIGRATIONS",
    "SOURCES",
    "TRAINING_STATUSES",
    "Generation",
    "GenerationStatus",
    "NewGeneration",
    "NewTraining",
    "Source",
    "Store",
    "TrainedModel",
    "Training",
    "TrainingStatus",
    "normalize_database_url",
    "open_store",
]
