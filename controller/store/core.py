"""What every part of the job store stands on: one client opened once and closed once, every
call through `Calls` (deadline, retries), and the fence a conditional write is judged by.

Fencing: every write about a run names `job_id`, `attempt` and the expected `status`, and says
whether it changed the row (`applied`) or found it moved on (`stale`). A statement whose answer
was lost (dropped socket, timeout) is retried; if the retry then finds nothing to change, the
row is read back to tell "our earlier try landed" from "someone else moved it".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Self, TypeVar

from controller.settings import DbSettings
from controller.store.backend import Args, Backend, ResultSet, describe_url, open_backend, split_url
from controller.store.calls import Calls, RetryPolicy
from controller.store.errors import StoreError, classify, redact
from controller.store.models import JobRow
from controller.store.params import Stmt
from controller.store.rows import chunks, job_row
from controller.store.schema import migrate
from controller.store.sql import Sql

T = TypeVar("T")


class StoreCore:
    """The connection and call plumbing `JobStore` is built on; build with `open`, `close` once."""

    def __init__(
        self, backend: Backend, db: DbSettings, retry: RetryPolicy, token: str | None
    ) -> None:
        self._db = db
        self._where = describe_url(db.url)
        self._calls = Calls(
            backend,
            retry=retry,
            timeout_seconds=db.statement_timeout_seconds,
            where=self._where,
            token=token,
        )
        self._sql = Sql(db.table)

    def __repr__(self) -> str:
        return f"JobStore({self._where!r}, table={self._db.table!r})"

    @property
    def statements(self) -> int:
        """Database calls sent (retries included); the benchmark reads it."""
        return self._calls.statements

    @property
    def rows_read(self) -> dict[str, int]:
        """Rows read as the database reported them, by statement kind (calls.statement_kind)."""
        return dict(self._calls.rows_read)

    @property
    def rows_written(self) -> dict[str, int]:
        return dict(self._calls.rows_written)

    @classmethod
    async def open(cls, db: DbSettings, *, retry: RetryPolicy | None = None) -> Self:
        """Build the client once, switch a file database to WAL, and migrate the schema."""
        url, url_token = split_url(db.url)
        token = db.auth_token.get_secret_value() if db.auth_token else url_token
        try:
            backend = await open_backend(url, token)
        except Exception as e:
            fault = classify(e)
            raise StoreError(
                redact(
                    f"cannot open the database {describe_url(db.url)}: {fault.description}", token
                )
            ) from None
        store = cls(backend, db, retry or RetryPolicy(), token)
        try:
            if url.startswith("file:"):
                # WAL lets readers run beside the one writer, and is remembered by the file.
                await store._run("PRAGMA journal_mode=WAL", [], "switch to WAL")
            await migrate(store._calls, db.table)
        except BaseException:
            await backend.close()
            raise
        return store

    async def close(self) -> None:
        await self._calls.backend.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _exec(self, call: Callable[[bool], Awaitable[T]], what: str) -> tuple[T, bool]:
        return await self._calls.exec(call, what)

    async def _run(self, sql: str, args: Args, what: str) -> tuple[ResultSet, bool]:
        return await self._calls.run(sql, args, what)

    async def _call(
        self, stmt: Stmt, what: str, rows: Sequence[Any] = (), **roles: Any
    ) -> tuple[ResultSet, bool]:
        """Run one statement with its rows' values and its named roles."""
        return await self._calls.run(stmt.sql, stmt.args(rows, **roles), what)

    async def _batch(
        self, stmts: Sequence[Stmt], roles: Mapping[str, Any], what: str
    ) -> tuple[list[ResultSet], bool]:
        """Run statements in one transaction, each with the roles it names from `roles`."""
        batch = [(s.sql, s.args(**{k: roles[k] for k in s.names})) for s in stmts]
        return await self._calls.exec(lambda _: self._calls.backend.batch(batch), what)

    async def _fenced(
        self,
        stmt: Stmt,
        what: str,
        landed: Callable[[JobRow], bool],
        *,
        job_id: str,
        **roles: Any,
    ) -> bool:
        """Run a conditional write; True if it changed the row (now or on a lost earlier try)."""
        rs, ambiguous = await self._call(stmt, what, job_id=job_id, **roles)
        if rs.rows:
            return True
        if ambiguous:
            row = await self.get(job_id)
            return row is not None and landed(row)
        return False

    async def get(self, job_id: str) -> JobRow | None:
        rs, _ = await self._call(self._sql.get, f"read job {job_id!r}", job_id=job_id)
        return job_row(rs.rows[0]) if rs.rows else None

    async def get_many(self, job_ids: Sequence[str]) -> dict[str, JobRow]:
        out: dict[str, JobRow] = {}
        for chunk in chunks(list(dict.fromkeys(job_ids))):
            rs, _ = await self._call(self._sql.get_many(len(chunk)), "read jobs", chunk)
            for values in rs.rows:
                row = job_row(values)
                out[row.job_id] = row
        return out
