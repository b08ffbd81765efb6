"""Reading the attempts ledger (one row per run, the history the app shows) and the
installations table (one row per installation, its liveness).

Each has one writer: the ledger `batches.py` (and a takeover, in the same transaction as the
takeover itself: `ownership.py`), the installations table `Ownership.beat`, on the database's
clock.
"""

from __future__ import annotations

from controller.store.core import StoreCore
from controller.store.models import AttemptRow, WorkerRow


class Ledger(StoreCore):
    async def attempts(self, job_id: str) -> list[AttemptRow]:
        rs, _ = await self._call(self._sql.attempts, f"read attempts of {job_id!r}", job_id=job_id)
        fields = tuple(AttemptRow.model_fields)
        return [AttemptRow.model_validate(dict(zip(fields, v, strict=True))) for v in rs.rows]

    async def workers(self) -> list[WorkerRow]:
        rs, _ = await self._call(self._sql.workers, "list workers")
        fields = tuple(WorkerRow.model_fields)
        return [WorkerRow.model_validate(dict(zip(fields, v, strict=True))) for v in rs.rows]
