"""Planned faults: tests add them, the server takes them (from its own threads)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

# Faults on the HTTP exchange, as a proxy or the network would cause them.
HttpAction = Literal["drop_before", "drop_after", "delay", "http_status", "too_many_requests"]
# Faults inside sqld: the matching execute/batch/sequence request gets an error result.
StmtAction = Literal["busy", "transaction_timeout", "blocked"]
Action = HttpAction | StmtAction

HTTP_ACTIONS: tuple[HttpAction, ...] = (
    "drop_before",
    "drop_after",
    "delay",
    "http_status",
    "too_many_requests",
)
STMT_ACTIONS: tuple[StmtAction, ...] = ("busy", "transaction_timeout", "blocked")

# The error each statement fault produces, as sqld words it (libsql-server hrana/stmt.rs).
STMT_ERRORS: dict[str, dict[str, str]] = {
    "busy": {"message": "Server cannot handle additional transactions", "code": "TRANSACTION_BUSY"},
    "transaction_timeout": {"message": "Transaction timed out", "code": "TRANSACTION_TIMEOUT"},
    "blocked": {"message": "Operation was blocked: quota exceeded", "code": "BLOCKED"},
}


@dataclass
class Fault:
    action: Action
    count: int
    match: str | None = None
    seconds: float = 0.0
    status: int = 503


@dataclass
class Faults:
    """Each fires on the next `count` requests whose SQL contains `match` (any if None)."""

    planned: list[Fault] = field(default_factory=list)
    fired: list[Action] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, action: Action, *, count: int = 1, match: str | None = None, **kw: Any) -> None:
        with self._lock:
            self.planned.append(Fault(action, count, match, **kw))

    def drop(
        self, *, after_execute: bool = False, count: int = 1, match: str | None = None
    ) -> None:
        """Cut the TCP connection before running, or after (the write stays, the answer is lost)."""
        self.add("drop_after" if after_execute else "drop_before", count=count, match=match)

    def delay(self, seconds: float, *, count: int = 1, match: str | None = None) -> None:
        self.add("delay", count=count, match=match, seconds=seconds)

    def http_status(self, status: int = 503, *, count: int = 1, match: str | None = None) -> None:
        """Answer with a bare 5xx (text body), as a load balancer in front of sqld would."""
        self.add("http_status", count=count, match=match, status=status)

    def too_many_requests(
        self, *, retry_after: float = 1.0, count: int = 1, match: str | None = None
    ) -> None:
        """HTTP 429 with a `Retry-After` header (seconds) and sqld's JSON body."""
        self.add("too_many_requests", count=count, match=match, seconds=retry_after)

    def busy(self, *, count: int = 1, match: str | None = None) -> None:
        self.add("busy", count=count, match=match)

    def transaction_timeout(self, *, count: int = 1, match: str | None = None) -> None:
        """TRANSACTION_TIMEOUT; the stream's open transaction is rolled back, as in sqld."""
        self.add("transaction_timeout", count=count, match=match)

    def blocked(self, *, count: int = 1, match: str | None = None) -> None:
        self.add("blocked", count=count, match=match)

    def clear(self) -> None:
        with self._lock:
            self.planned.clear()

    def take(self, actions: tuple[Action, ...], sql: str) -> Fault | None:
        with self._lock:
            for f in self.planned:
                if f.action in actions and (f.match is None or f.match in sql):
                    f.count -= 1
                    if f.count <= 0:
                        self.planned.remove(f)
                    self.fired.append(f.action)
                    return f
        return None
