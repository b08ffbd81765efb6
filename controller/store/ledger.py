"""The attempts ledger (one row per run, the history the app shows) and the worker registry
(one row per installation, its liveness), one row at a time; `batches.py` writes the ledger
for many attempts at once."""

from __future__ import annotations

from controller.store.core import StoreCore
from controller.store.models import AttemptRow, WorkerRow
from controller.store.rows import resolve_now


class Ledger(StoreCore):
    async def attempt_started(
        self, job_id: str, attempt: int, *, pod: str | None, node: str | None, started_ms: int
    ) -> None:
        await self._run(
            self._sql.attempt_started,
            [job_id, attempt, pod, node, started_ms],
            f"record start of {job_id!r} attempt {attempt}",
        )

    async def attempt_ended(
        self,
        job_id: str,
        attempt: int,
        *,
        exit_code: int | None,
        reason: str | None,
        ended_ms: int,
    ) -> None:
        await self._run(
            self._sql.attempt_ended,
            [job_id, attempt, ended_ms, exit_code, reason],
            f"record end of {job_id!r} attempt {attempt}",
        )

    async def attempts(self, job_id: str) -> list[AttemptRow]:
        rs, _ = await self._run(self._sql.attempts, [job_id], f"read attempts of {job_id!r}")
        fields = tuple(AttemptRow.model_fields)
        return [AttemptRow.model_validate(dict(zip(fields, v, strict=True))) for v in rs.rows]

    async def register_worker(
        self, worker_id: str, version: str, *, now_ms: int | None = None
    ) -> None:
        await self._run(
            self._sql.register_worker,
            [worker_id, version, resolve_now(now_ms)],
            f"register worker {worker_id!r}",
        )

    async def worker_heartbeat(
        self, worker_id: str, active: int, *, now_ms: int | None = None
    ) -> None:
        await self._run(
            self._sql.worker_heartbeat,
            [worker_id, active, resolve_now(now_ms)],
            f"heartbeat of worker {worker_id!r}",
        )

    async def workers(self) -> list[WorkerRow]:
        rs, _ = await self._run(self._sql.workers, [], "list workers")
        fields = tuple(WorkerRow.model_fields)
        return [WorkerRow.model_validate(dict(zip(fields, v, strict=True))) for v in rs.rows]
