"""The test server's protocol details that the conformance script does not reach: batons and
stream expiry, auth, statuses and bodies, batch conditions, stored SQL, and each injected fault.
Raw HTTP, so what is checked is the wire itself."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.hrana_server import HranaServer, running_server
from tests.helpers import wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HranaServer]:
    with running_server(str(tmp_path / "p.db")) as s:
        pipeline(s, [x("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)")])
        yield s


def call(
    server: HranaServer, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url() + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def pipeline(
    server: HranaServer, requests: list[Any], baton: str | None = None, version: int = 3
) -> dict[str, Any]:
    status, _, text = call(server, f"/v{version}/pipeline", {"baton": baton, "requests": requests})
    assert status == 200, text
    return dict(json.loads(text))


def x(sql: str, *args: Any) -> dict[str, Any]:
    values = [{"type": "text", "value": a} if isinstance(a, str) else a for a in args]
    return {"type": "execute", "stmt": {"sql": sql, "args": values}}


def rows(result: dict[str, Any]) -> list[list[Any]]:
    return [[v.get("value") for v in r] for r in result["response"]["result"]["rows"]]


def count(server: HranaServer) -> int:
    return int(rows(pipeline(server, [x("SELECT count(*) FROM t")])["results"][0])[0][0])


def test_a_transaction_spans_requests_through_batons(server: HranaServer) -> None:
    first = pipeline(server, [x("BEGIN"), x("INSERT INTO t (v) VALUES (?)", "a")])
    assert first["base_url"] is None and first["baton"]
    assert count(server) == 0  # another stream does not see it yet
    second = pipeline(server, [{"type": "get_autocommit"}, x("COMMIT")], first["baton"])
    assert second["results"][0]["response"] == {"type": "get_autocommit", "is_autocommit": False}
    assert count(server) == 1
    status, _, text = call(server, "/v3/pipeline", {"baton": first["baton"], "requests": []})
    assert (status, text) == (400, "Received a baton that has already been used")
    status, _, text = call(server, "/v3/pipeline", {"baton": "AAAA" * 12, "requests": []})
    assert (status, text) == (400, "Received an invalid baton")
    closed = pipeline(server, [{"type": "close"}], second["baton"])
    assert closed["baton"] is None


def test_an_idle_stream_expires_and_its_lock_is_released(tmp_path: Path) -> None:
    server = HranaServer(str(tmp_path / "e.db"), stream_expiry_seconds=0.5).start()
    try:
        held = pipeline(server, [x("CREATE TABLE t (v)"), x("BEGIN IMMEDIATE")])
        wait_for(lambda: server.streams.open_count() == 0, timeout=10, message="expiry")
        status, _, text = call(server, "/v3/pipeline", {"baton": held["baton"], "requests": []})
        assert status == 500
        assert json.loads(text) == {
            "message": "The stream has expired due to inactivity",
            "code": "STREAM_EXPIRED",
        }
        assert pipeline(server, [x("INSERT INTO t VALUES (1)")])["results"][0]["type"] == "ok"
    finally:
        server.stop()


def test_auth_routes_and_protocol_errors(tmp_path: Path) -> None:
    with running_server(str(tmp_path / "a.db"), token="s3cret") as server:
        body = {"baton": None, "requests": [x("SELECT 1")]}
        assert call(server, "/v2/pipeline", body)[0] == 401
        wrong = call(server, "/v2/pipeline", body, {"Authorization": "Bearer nope"})
        assert wrong[0] == 401 and "Unauthorized" in json.loads(wrong[2])["error"]
        assert call(server, "/v2/pipeline", body, {"Authorization": "Bearer s3cret"})[0] == 200
        assert call(server, "/health")[0] == 200
        assert call(server, "/v2")[0] == call(server, "/v3")[0] == 200
        assert call(server, "/v3-protobuf")[0] == 404
        assert call(server, "/v1/execute", {"stmt": {"sql": "SELECT 1"}})[0] == 404
        auth = {"Authorization": "Bearer s3cret"}
        bogus = {"baton": None, "requests": [{"type": "open_stream"}]}
        assert call(server, "/v3/pipeline", bogus, auth)[0] == 400
        v2 = {"baton": None, "requests": [{"type": "get_autocommit"}]}
        assert call(server, "/v2/pipeline", v2, auth)[0] == 400


def test_batch_conditions_and_a_step_that_does_not_parse(server: HranaServer) -> None:
    def step(sql: str, cond: Any = None) -> dict[str, Any]:
        return {"stmt": {"sql": sql}, "condition": cond}

    batch = {
        "type": "batch",
        "batch": {
            "steps": [
                step("INSERT INTO t (v) VALUES ('a')"),
                step("INSERT INTO t (v) VALUES ('a')"),
                step("SELECT 'after error'", {"type": "error", "step": 1}),
                step(
                    "SELECT 'both'",
                    {
                        "type": "and",
                        "conds": [
                            {"type": "ok", "step": 0},
                            {"type": "not", "cond": {"type": "ok", "step": 1}},
                        ],
                    },
                ),
                step("SELECT 'never'", {"type": "or", "conds": [{"type": "ok", "step": 1}]}),
                step("SELECT 'autocommit'", {"type": "is_autocommit"}),
            ]
        },
    }
    result = pipeline(server, [batch])["results"][0]["response"]["result"]
    assert [r is not None for r in result["step_results"]] == [1, 0, 1, 1, 0, 1]
    assert result["step_errors"][1]["code"] == "SQLITE_CONSTRAINT"
    bad = {
        "type": "batch",
        "batch": {"steps": [step("INSERT INTO t (v) VALUES ('b')"), step("SELEC")]},
    }
    error = pipeline(server, [bad])["results"][0]
    assert error["type"] == "error" and error["error"]["code"] == "SQL_PARSE_ERROR"
    assert count(server) == 1  # the batch with a bad step ran no step at all


def test_stored_sql_sequence_and_describe(server: HranaServer) -> None:
    out = pipeline(
        server,
        [
            {"type": "store_sql", "sql_id": 7, "sql": "INSERT INTO t (v) VALUES (?) RETURNING id"},
            {"type": "execute", "stmt": {"sql_id": 7, "args": [{"type": "text", "value": "s"}]}},
            {"type": "close_sql", "sql_id": 7},
            {
                "type": "sequence",
                "sql": "INSERT INTO t (v) VALUES ('q1'); INSERT INTO t (v) VALUES ('q;2');",
            },
            {"type": "describe", "sql": "SELECT id, v, id + 1 FROM t WHERE v = :v"},
        ],
    )["results"]
    assert rows(out[1]) == [["1"]]
    assert out[1]["response"]["result"]["cols"] == [{"name": "id", "decltype": "INTEGER"}]
    assert out[3] == {"type": "ok", "response": {"type": "sequence"}}
    assert out[4]["response"]["result"] == {
        "params": [{"name": ":v"}],
        "cols": [
            {"name": "id", "decltype": "INTEGER"},
            {"name": "v", "decltype": "TEXT"},
            {"name": "id + 1", "decltype": None},
        ],
        "is_explain": False,
        "is_readonly": True,
    }
    assert count(server) == 3


def test_http_faults(server: HranaServer) -> None:
    body = {"baton": None, "requests": [x("INSERT INTO t (v) VALUES ('f')")]}
    server.faults.http_status(502)
    assert call(server, "/v2/pipeline", body)[:1] == (502,)
    server.faults.too_many_requests(retry_after=2)
    status, headers, text = call(server, "/v2/pipeline", body)
    assert (status, headers["Retry-After"]) == (429, "2") and "error" in json.loads(text)
    server.faults.drop(match="'f'")
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        call(server, "/v2/pipeline", body)
    assert count(server) == 0
    server.faults.drop(after_execute=True, match="'f'")
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        call(server, "/v2/pipeline", body)
    assert count(server) == 1  # the write landed, its answer did not
    assert server.faults.fired == ["http_status", "too_many_requests", "drop_before", "drop_after"]


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("busy", "TRANSACTION_BUSY"),
        ("transaction_timeout", "TRANSACTION_TIMEOUT"),
        ("blocked", "BLOCKED"),
    ],
)
def test_statement_faults(server: HranaServer, fault: str, code: str) -> None:
    opened = pipeline(server, [x("BEGIN"), x("INSERT INTO t (v) VALUES ('x')")])
    getattr(server.faults, fault)(match="'y'")
    out = pipeline(
        server, [x("INSERT INTO t (v) VALUES ('y')"), {"type": "get_autocommit"}], opened["baton"]
    )
    assert out["results"][0]["error"]["code"] == code
    # sqld rolls a timed-out transaction back; the other faults leave it open.
    assert out["results"][1]["response"]["is_autocommit"] is (fault == "transaction_timeout")
    assert server.faults.fired == [fault]
