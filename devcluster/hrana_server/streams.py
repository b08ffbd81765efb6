"""Hrana-over-HTTP streams kept across requests, named by batons (libsql-server
`hrana/http/stream.rs`): a baton is base64 (no padding) of stream id, sequence number and an
HMAC-SHA256 over both, so it cannot be forged; each response carries a new one and the old one
is then refused. A stream idle for `expiry` seconds is rolled back and closed; its batons
answer STREAM_EXPIRED for a while after, then "invalid baton".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .protocol import ProtocolError, Stream

CLEANUP_SECONDS = 300.0


class StreamExpired(Exception):
    """HTTP 500 with `{"message", "code": "STREAM_EXPIRED"}`, as sqld sends it."""

    def __init__(self) -> None:
        super().__init__("The stream has expired due to inactivity")


@dataclass
class _Entry:
    stream: Stream
    seq: int
    state: str  # available | acquired | expired
    deadline: float


class Streams:
    def __init__(self, connect: Callable[[], sqlite3.Connection], *, expiry: float) -> None:
        self._connect = connect
        self._expiry = expiry
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}
        self._ids: dict[int, int] = {}  # id(Stream) -> stream id

    def _baton(self, sid: int, seq: int) -> str:
        payload = struct.pack(">QQ", sid, seq)
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()
        return base64.b64encode(payload + mac).decode().rstrip("=")

    def _decode(self, baton: str) -> tuple[int, int]:
        try:
            raw = base64.b64decode(baton + "=" * (-len(baton) % 4), validate=True)
        except ValueError:
            raise ProtocolError("Received an invalid baton") from None
        mac = hmac.new(self._key, raw[:16], hashlib.sha256).digest()
        if len(raw) != 48 or not hmac.compare_digest(mac, raw[16:]):
            raise ProtocolError("Received an invalid baton")
        sid, seq = struct.unpack(">QQ", raw[:16])
        return int(sid), int(seq)

    def acquire(self, baton: str | None) -> Stream:
        if baton is None:
            stream = Stream(self._connect())
            with self._lock:
                sid = secrets.randbits(64)
                self._entries[sid] = _Entry(stream, secrets.randbits(63), "acquired", 0.0)
                self._ids[id(stream)] = sid
            return stream
        sid, seq = self._decode(baton)
        with self._lock:
            self._expire_locked(time.monotonic())
            entry = self._entries.get(sid)
            if entry is None:
                raise ProtocolError("Received an invalid baton")
            if entry.state == "expired":
                raise StreamExpired()
            if entry.state == "acquired" or entry.seq != seq:
                raise ProtocolError("Received a baton that has already been used")
            entry.state = "acquired"
            entry.seq += 1
            return entry.stream

    def release(self, stream: Stream) -> str | None:
        """The baton for the next request, or None once the stream is closed."""
        with self._lock:
            sid = self._ids[id(stream)]
            entry = self._entries[sid]
            if stream.db is None:
                del self._entries[sid], self._ids[id(stream)]
                return None
            entry.state, entry.deadline = "available", time.monotonic() + self._expiry
            return self._baton(sid, entry.seq)

    def discard(self, stream: Stream) -> None:
        """A protocol error ends the stream (sqld drops it without releasing)."""
        if stream.db is not None:
            stream.db.close()
            stream.db = None
        self.release(stream)

    def expire(self) -> None:
        with self._lock:
            self._expire_locked(time.monotonic())

    def _expire_locked(self, now: float) -> None:
        for sid, entry in list(self._entries.items()):
            if entry.state == "available" and entry.deadline <= now:
                entry.state, entry.deadline = "expired", now + CLEANUP_SECONDS
                if entry.stream.db is not None:
                    entry.stream.db.close()  # rolls back whatever it left open
                    entry.stream.db = None
            elif entry.state == "expired" and entry.deadline <= now:
                del self._entries[sid], self._ids[id(entry.stream)]

    def close_all(self) -> None:
        with self._lock:
            for entry in self._entries.values():
                if entry.stream.db is not None:
                    entry.stream.db.close()
                    entry.stream.db = None
            self._entries.clear()
            self._ids.clear()

    def open_count(self) -> int:
        with self._lock:
            return sum(e.stream.db is not None for e in self._entries.values())
