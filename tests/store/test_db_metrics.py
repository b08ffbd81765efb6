"""The database metrics every store call feeds (controller.metrics): latency by SQL verb,
failed tries by kind, and audiojob_db_up, through the Hrana test server's real faults."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from controller import metrics as m
from controller.store import JobStore, StoreError, StoreUnavailable
from devcluster.hrana_server import HranaServer

INGEST = {"url": "https://example.com/a"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("sql", "verb"),
    [
        ("SELECT 1", "select"),
        ("  UPDATE audio_jobs SET x = 1", "update"),
        ("INSERT INTO t VALUES (1)", "insert"),
        ("WITH c AS (SELECT 1) SELECT * FROM c", "with"),
        ("(SELECT 1)", "other"),
        ("", "other"),
    ],
)
def test_statement_label_is_the_sql_verb(sql: str, verb: str) -> None:
    assert m.sql_verb(sql) == verb


async def test_an_outage_counts_its_tries_and_sets_db_up_to_0(
    wire: JobStore, server: HranaServer
) -> None:
    await wire.insert(job_id="j0", type="ingest", payload=INGEST)
    assert sample("audiojob_db_up") == 1
    blocked = sample("audiojob_db_errors_total", kind="blocked")
    selects = sample("audiojob_db_statement_duration_seconds_count", statement="select")
    server.faults.blocked(count=100)
    with pytest.raises(StoreUnavailable):
        await wire.get("j0")
    assert sample("audiojob_db_errors_total", kind="blocked") == blocked + 6, "every try"
    assert sample("audiojob_db_up") == 0
    assert sample("audiojob_db_statement_duration_seconds_count", statement="select") == (
        selects + 1
    ), "one call, however many tries"
    server.faults.clear()
    assert await wire.get("j0") is not None
    assert sample("audiojob_db_up") == 1


async def test_a_refused_statement_is_an_error_but_the_database_is_up(wire: JobStore) -> None:
    sql_errors = sample("audiojob_db_errors_total", kind="sql")
    with pytest.raises(StoreError):
        await wire._run("SELECT * FROM no_such_table", [], "read a missing table")
    assert sample("audiojob_db_errors_total", kind="sql") == sql_errors + 1
    assert sample("audiojob_db_up") == 1
