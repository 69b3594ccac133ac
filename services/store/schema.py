"""The tables the queries are written against: the schema after the latest migration step."""

from __future__ import annotations

from typing import Final

from services.store.migrations import LATEST_SCHEMA_VERSION, schema_at

METADATA: Final = schema_at(LATEST_SCHEMA_VERSION)
meta_table: Final = METADATA.tables["meta"]
generations_table: Final = METADATA.tables["generations"]
trainings_table: Final = METADATA.tables["trainings"]
models_table: Final = METADATA.tables["trained_models"]
webhooks_table: Final = METADATA.tables["webhook_events"]
