"""The schema as versioned migrations, rendered for the configured table name, and applied.

The version lives in the store's own table (`audio_job_meta`, key `schema_version`), never in
`PRAGMA user_version`: that number belongs to the web app's own migrator, and hosted Turso
refuses the pragma. Every migration statement is idempotent, so a database made by an older
controller (which kept `user_version = 1` and has no meta table) simply gets version 1 recorded,
and two controllers migrating at once both succeed.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from typing import Protocol

from controller.store.backend import Args, ResultSet

log = logging.getLogger("audiojob.store")

SCHEMA_VERSION = 2

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
    """Idempotent statements that take the schema from version i to i + 1, at index i."""
    whole = split_statements(rename(schema_sql(), table))
    # 2: the retention index. The file is idempotent, so applying it again adds just that.
    return [whole, whole]


_READ_VERSION = "SELECT value FROM audio_job_meta WHERE key = 'schema_version'"
# Never moves the version back if a newer controller got there first.
_WRITE_VERSION = (
    "INSERT INTO audio_job_meta (key, value) VALUES ('schema_version', ?1)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    " WHERE CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)"
)


class Caller(Protocol):
    async def run(self, sql: str, args: Args, what: str) -> tuple[ResultSet, bool]: ...
    async def batch(self, stmts: list[tuple[str, Args]], what: str) -> list[ResultSet]: ...


async def migrate(calls: Caller, table: str) -> int:
    """Bring the schema to SCHEMA_VERSION; return the version found before."""
    # Created first and alone (the version is read from it); same text as in schema.sql.
    meta = rename("audio_job_meta", table)
    steps = migrations(table)
    create = next(s for s in steps[0] if s.startswith(f"CREATE TABLE IF NOT EXISTS {meta} "))
    await calls.run(create, [], "create the meta table")
    rs, _ = await calls.run(rename(_READ_VERSION, table), [], "read schema version")
    found = int(rs.rows[0][0]) if rs.rows else 0
    if found > SCHEMA_VERSION:
        log.warning(
            "schema version %d is newer than this controller's %d; carrying on",
            found,
            SCHEMA_VERSION,
        )
    for target in range(found + 1, SCHEMA_VERSION + 1):
        stmts: list[tuple[str, Args]] = [(s, []) for s in steps[target - 1]]
        stmts.append((rename(_WRITE_VERSION, table), [str(target)]))
        # One batch is one transaction: a concurrent migrator waits, then finds its
        # statements already applied (every one is idempotent).
        await calls.batch(stmts, f"migrate to schema version {target}")
    return found
