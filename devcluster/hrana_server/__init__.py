"""A test double of sqld's Hrana over HTTP, over a real SQLite file on loopback.

What it serves, as libsql-server does (`src/http/user/mod.rs`, `src/hrana/`):

- `POST /v2/pipeline` (Hrana 2) and `POST /v3/pipeline` (Hrana 3), JSON: stream requests
  `execute`, `batch` (conditions ok/error/not/and/or, and is_autocommit on v3), `sequence`,
  `describe`, `store_sql`/`close_sql`, `get_autocommit` (v3), `close`. `POST /v3/cursor` (JSON
  lines). Streams live across requests behind HMAC-signed batons, one new baton per response;
  a stream idle for `stream_expiry_seconds` (sqld: 10) is rolled back and closed. `base_url`
  is null unless the server is given one (as sqld without `--http-self-url`).
- `GET /v2`, `GET /v3` (version probes), `GET /health`, `GET /version`; anything else is 404,
  including `/v3-protobuf*` (clients then fall back to JSON), the legacy `/v1/*` and `POST /`.
- Values exactly as Hrana encodes them: integers as decimal strings, floats as JSON numbers,
  blobs as unpadded base64, null; declared column types from SQLite itself; affected row
  count; `last_insert_rowid` as a string.
- sqld's errors: statement errors inside the result (HTTP 200) with base SQLite codes
  (`SQLITE_CONSTRAINT`), `SQL_PARSE_ERROR`, `SQL_INPUT_ERROR`, `SQL_MANY_STATEMENTS`,
  `ARGS_INVALID`...; protocol errors (bad or reused baton, unknown request) HTTP 400 with a
  text body; an expired stream HTTP 500 `STREAM_EXPIRED`; with a token, a request without
  `Authorization: Bearer <token>` gets HTTP 401.

Not covered: Protobuf encodings, Hrana over WebSocket, the legacy HTTP APIs, JWT validation
(the token is compared as a string), replication, namespaces, sqld's own transaction timeouts
and lock stealing (inject them instead), and exact wording of parser messages.

Fault injection, `server.faults.<kind>(..., count=1, match=None)`: each fault fires on the next
`count` requests whose SQL contains `match` (any request when None), and is recorded in
`server.faults.fired` by name:

- `drop(after_execute=False)` -> "drop_before" / "drop_after": cut the TCP connection before
  running the pipeline, or after it ran (the write happened, the answer is lost).
- `delay(seconds)` -> "delay": answer late.
- `http_status(503)` -> "http_status": a bare 5xx with a text body, as a proxy sends it.
- `too_many_requests(retry_after=1.0)` -> "too_many_requests": HTTP 429, `Retry-After`.
- `busy()` -> "busy": the matching execute/batch/sequence gets `TRANSACTION_BUSY`.
- `transaction_timeout()` -> "transaction_timeout": `TRANSACTION_TIMEOUT`, and the stream's
  open transaction is rolled back.
- `blocked()` -> "blocked": `BLOCKED` (Turso's quota error).
- `faults.clear()` drops what has not fired; `server.down_for(seconds)` stops listening and
  cuts every connection, then listens again on the same port.

`server.stats` counts pipeline requests and executed statements.
"""

from .faults import Fault, Faults
from .server import HranaServer, running_server

__all__ = ["Fault", "Faults", "HranaServer", "running_server"]
