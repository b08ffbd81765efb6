"""The schema as versioned migrations, rendered for the configured table name."""

from __future__ import annotations

import re
from importlib import resources

SCHEMA_VERSION = 1

_NAMES = re.compile(r"\baudio_job(s\b|_)")


def rename(sql: str, table: str) -> str:
    """Rewrite the default object names (`audio_jobs`, `audio_job_*`) for another table name.

    `table` is a checked identifier (DbSettings), so this is not an injection point.
    """
    if table == "audio_jobs":
        return sql
    base = table[:-1] if table.endswith("s") else table
    return _NAMES.sub(lambda m: table if m.group(1) == "s" else base + "_", sql)


def schema_sql() -> str:
    """The plain SQL file shipped for the web app (default table names)."""
    return resources.files("controller.store").joinpath("schema.sql").read_text("utf-8")


def split_statements(script: str) -> list[str]:
    """Split the schema file into statements; it has no triggers or string literals with ';'."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def migrations(table: str) -> list[list[str]]:
    """Statements that take the schema from version i to i + 1, at index i."""
    return [split_statements(rename(schema_sql(), table))]
