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
processes_table: Final = METADATA.tables["processes"]
guild_settings_table: Final = METADATA.tables["guild_settings"]
settings_changes_table: Final = METADATA.tables["settings_changes"]
budget_notices_table: Final = METADATA.tables["budget_notices"]
api_keys_table: Final = METADATA.tables["api_keys"]
