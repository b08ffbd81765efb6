"""Hypothesis-generated garbage in `type` and `payload` never raises out of the store."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.settings import DbSettings
from controller.store import ClaimedJob, JobRow, JobStore, RejectedJob
from controller.store.store import validate_row

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "url": st.text(max_size=30) | st.just("https://example.com/a") | st.integers(),
        "input": st.text(max_size=10) | st.none(),
        "format": st.sampled_from(["mp3", "wav", "aiff", ""]),
        "sample_rate": st.integers(-10, 300_000),
        "edits": st.lists(
            st.dictionaries(
                st.sampled_from(["op", "start", "end", "duration", "db", "factor"]),
                st.sampled_from(["trim", "gain", "speed", "fade_in"]) | st.floats() | st.integers(),
            ),
            max_size=3,
        ),
        "extra": json_values,
    },
)
payloads = (
    st.text()
    | json_values.map(json.dumps)
    | near_valid.map(json.dumps)
    | st.just("[" * 100_000)
    | st.just('{"url": ')
)
types = st.sampled_from(["ingest", "preview", "save"]) | st.text(max_size=60)


def row(job_type: str, payload: str) -> JobRow:
    return JobRow(
        job_id="x",
        type=job_type,
        status="processing",
        payload=payload,
        priority=0,
        stage=None,
        progress=0,
        attempt=1,
        retry_count=0,
        max_retries=1,
        run_after=None,
        result=None,
        error=None,
        error_kind=None,
        claimed_by="w",
        k8s_job=None,
        trace_id=None,
        created_at=0,
        updated_at=0,
        started_at=0,
        finished_at=None,
    )


@settings(max_examples=500, deadline=None)
@given(job_type=types, payload=payloads)
def test_validation_never_raises(job_type: str, payload: str) -> None:
    out = validate_row(row(job_type, payload))
    if isinstance(out, RejectedJob):
        assert out.error and "\n" not in out.error and len(out.error) <= 1_000
    else:
        assert isinstance(out, ClaimedJob)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(types, payloads), min_size=1, max_size=8))
def test_claiming_garbage_fails_rows_and_keeps_going(rows: list[tuple[str, str]]) -> None:
    async def scenario(path: Path) -> None:
        async with await JobStore.open(DbSettings(url=f"file:{path}")) as store:
            for i, (job_type, payload) in enumerate(rows):
                await store.insert(job_id=f"g{i}", type=job_type, payload=payload, now_ms=i)
            claim = await store.claim(worker_id="w", limit=len(rows))
            assert len(claim.jobs) + len(claim.rejected) == len(rows)
            for bad in claim.rejected:
                stored = await store.get(bad.row.job_id)
                assert stored is not None
                assert (stored.status, stored.error_kind, stored.error) == (
                    "failed",
                    "permanent",
                    bad.error,
                )
            for good in claim.jobs:
                stored = await store.get(good.row.job_id)
                assert stored is not None and stored.status == "processing"
            assert (await store.counts()).inflight == len(claim.jobs)

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(scenario(Path(d) / "fuzz.db"))
