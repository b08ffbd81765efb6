"""Failure classification: every way a job can fail becomes one sentence and one kind.

The kind decides what the controller does next: `transient` is retried (exit 75), `permanent`
fails the row at once (exit 65). The split follows the worker this project replaces: network
trouble and server-side errors are worth another try; bad input never is.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Iterator

from runner.contract import EXIT_PERMANENT, EXIT_TRANSIENT, ErrorKind

# OSError numbers that mean "the network hiccuped", from the original worker's list
# (ECONNRESET, ETIMEDOUT, ECONNREFUSED, EAI_AGAIN, EPIPE) plus their close relatives.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.ETIMEDOUT,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENOSPC,  # scratch filled by a neighbour; another pod may have room
    }
)

# When only text survives (yt-dlp flattens some errors to strings), these phrases decide.
_TRANSIENT_TEXT = re.compile(
    r"timed? ?out|connection (?:reset|refused|aborted)|reset by peer|broken pipe"
    r"|temporary failure in name resolution|name or service not known|nodename nor servname"
    r"|no address associated|network is unreachable|remote end closed|incompleteread"
    r"|bytes read, \d+ more expected|content too short|downloaded \d+ bytes, expected",
    re.IGNORECASE,
)
PERMANENT: ErrorKind = "permanent"
TRANSIENT: ErrorKind = "transient"

_HTTP_STATUS_TEXT = re.compile(r"HTTP Error (\d{3})")


class RunnerError(Exception):
    """A failure the runner understands; `str()` is the sentence for the row's `error`."""

    kind: ErrorKind = "permanent"

    def __init__(self, sentence: str, kind: ErrorKind | None = None) -> None:
        super().__init__(sentence)
        if kind is not None:
            self.kind = kind

    @property
    def sentence(self) -> str:
        return str(self.args[0])

    @property
    def exit_code(self) -> int:
        return EXIT_TRANSIENT if self.kind == "transient" else EXIT_PERMANENT


class PermanentError(RunnerError):
    kind: ErrorKind = "permanent"


class TransientError(RunnerError):
    kind: ErrorKind = "transient"


class PayloadError(ValueError):
    """A payload that cannot run; the message is a sentence a person can act on.
    (`runner.payloads` raises it; it lives here so the runner can catch it before that
    module, and pydantic with it, is imported.)"""


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException so no `except Exception` on the way swallows it."""


def short_url(url: str, limit: int = 200) -> str:
    return url if len(url) <= limit else url[: limit - 1] + "…"


def kind_for_http_status(status: int) -> ErrorKind:
    """5xx and 429 are the server's trouble (or rate limit) and pass; other 4xx do not."""
    return "transient" if status >= 500 or status in (408, 429) else "permanent"


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps, including yt-dlp's own `exc_info`/`cause` links."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for attr in ("cause", "__cause__", "__context__", "reason"):
            nxt = getattr(e, attr, None)
            if isinstance(nxt, BaseException):
                todo.append(nxt)
        info = getattr(e, "exc_info", None)
        if isinstance(info, tuple) and len(info) > 1 and isinstance(info[1], BaseException):
            todo.append(info[1])


def network_reason(exc: BaseException) -> tuple[str, ErrorKind] | None:
    """A short reason and kind when the chain holds a recognisable network failure."""
    for e in exception_chain(exc):
        status = getattr(e, "status", None)
        if isinstance(status, int) and 100 <= status <= 599 and type(e).__name__ == "HTTPError":
            reason = getattr(e, "reason", "") or ""
            return f"HTTP {status}{' ' + reason if reason else ''}", kind_for_http_status(status)
        if isinstance(e, socket.gaierror):
            return f"DNS lookup failed ({e.strerror or e})", "transient"
        if isinstance(e, TimeoutError | socket.timeout):
            return "the connection timed out", "transient"
        if isinstance(e, ConnectionResetError):
            return "the connection was reset", "transient"
        if isinstance(e, ConnectionRefusedError):
            return "the connection was refused", "transient"
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return f"{e.strerror or e}", "transient"
        name = type(e).__name__
        if name == "ContentTooShortError":
            got, want = getattr(e, "downloaded", "?"), getattr(e, "expected", "?")
            return f"the source closed the connection after {got} of {want} bytes", "transient"
        if name == "IncompleteRead":
            return "the source closed the connection before sending the whole file", "transient"
        if name == "UnsupportedError":
            return "the URL is not supported (no audio found there)", "permanent"
    text = " ".join(str(e) for e in exception_chain(exc))
    m = _HTTP_STATUS_TEXT.search(text)
    if m:
        status = int(m.group(1))
        return f"HTTP {status}", kind_for_http_status(status)
    if _TRANSIENT_TEXT.search(text):
        return _first_line(str(exc)), "transient"
    return None


def classify_download_failure(exc: BaseException, url: str) -> RunnerError:
    """yt-dlp's exception as the row's sentence: `… download https://x: HTTP 403 (permanent)`."""
    found = network_reason(exc)
    if found is None:
        reason, kind = _clean_ytdlp_text(str(exc)), PERMANENT
    else:
        reason, kind = found
    return RunnerError(f"yt-dlp could not download {short_url(url)}: {reason} ({kind})", kind)


def classify_os_error(exc: OSError, doing: str) -> RunnerError:
    kind: ErrorKind = "transient" if exc.errno in TRANSIENT_ERRNOS else "permanent"
    return RunnerError(f"{doing}: {exc.strerror or exc} ({kind})", kind)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _clean_ytdlp_text(text: str) -> str:
    # yt-dlp prefixes "ERROR: " and appends a "please report this issue" paragraph.
    text = _first_line(text.removeprefix("ERROR: "))
    text = re.sub(r";? ?please report this issue.*$", "", text, flags=re.IGNORECASE)
    return text[:500]
