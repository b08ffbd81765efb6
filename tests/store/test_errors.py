"""Which faults are retried, which may have committed, and what the user reads."""

from __future__ import annotations

import sqlite3

import aiohttp
import pytest

from controller.store.errors import classify, redact
from controller.store.hrana import HranaError

# (error, transient, maybe_applied, busy, words the description must contain)
CASES = [
    (HranaError("database is locked", code="SQLITE_BUSY"), True, False, True, "locked"),
    (HranaError("x", code="TRANSACTION_BUSY"), True, False, False, "busy"),
    (HranaError("Transaction timed out", code="TRANSACTION_TIMEOUT"), True, False, False, "busy"),
    (HranaError("Operation was blocked", code="BLOCKED"), True, False, False, "quota"),
    (
        HranaError("UNIQUE constraint failed", code="SQLITE_CONSTRAINT"),
        False,
        False,
        False,
        "UNIQUE",
    ),
    (HranaError("near x: syntax error", code="SQL_PARSE_ERROR"), False, False, False, "syntax"),
    (HranaError("slow down", status=429, retry_after=2.0), True, False, False, "rate limited"),
    (HranaError("bad gateway", status=502), True, True, False, "HTTP 502"),
    (HranaError("unavailable", status=503), True, False, False, "HTTP 503"),
    (HranaError("gateway timeout", status=504), True, True, False, "HTTP 504"),
    (HranaError("The JWT is invalid", status=401), False, False, False, "TURSO_AUTH_TOKEN"),
    (HranaError("not found", status=404), False, False, False, "/v2/pipeline"),
    (aiohttp.ServerDisconnectedError(), True, True, False, "connection"),
    (TimeoutError(), True, True, False, "did not answer"),
    (sqlite3.OperationalError("database is locked"), True, False, True, "locked"),
    (sqlite3.IntegrityError("NOT NULL constraint failed"), False, False, False, "NOT NULL"),
]


@pytest.mark.parametrize(("error", "transient", "maybe", "busy", "words"), CASES)
def test_classify(
    error: BaseException, transient: bool, maybe: bool, busy: bool, words: str
) -> None:
    fault = classify(error)
    assert (fault.transient, fault.maybe_applied, fault.busy) == (transient, maybe, busy)
    assert words in fault.description


def test_retry_after_is_carried() -> None:
    assert classify(HranaError("slow", status=429, retry_after=2.5)).retry_after == 2.5
    assert classify(HranaError("busy", status=503, retry_after=1.0)).retry_after == 1.0


def test_connection_refused_cannot_have_committed() -> None:
    key = aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)
    refused = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))
    fault = classify(refused)
    assert (fault.transient, fault.maybe_applied) == (True, False)


def test_redact() -> None:
    text = "failed: Authorization: Bearer abc.def url?authToken=xyz&a=1 echoed abc.def"
    assert (
        redact(text, "abc.def")
        == "failed: Authorization: Bearer *** url?authToken=***&a=1 echoed ***"
    )
