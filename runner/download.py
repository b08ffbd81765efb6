"""yt-dlp in a child process: `python -m runner.download '<json request>'`.

Why a child and not a thread: yt-dlp's Python API has no way to cancel a download (its
retries, sleeps and socket reads block where no exception can reach them) and a thread
cannot be killed. A child in its own process group can be: SIGTERM ends it (Python's default
action), SIGKILL ends it for sure, and anything yt-dlp starts goes with it. It still uses
the Python API, for progress hooks and structured errors, and talks to the runner in JSON
lines on stdout: `progress`, then `done` or `error` (already classified, since the exception
objects live here). Every connection it makes is checked by the address guard
(`runner/guard.py`), installed before yt-dlp is imported.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from runner.errors import RunnerError, classify_download_failure, short_url
from runner.guard import Guard
from runner.rules import NetworkRules

PROGRESS_EVERY = 0.25  # seconds between progress lines; the reporter throttles further


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class _Logger:
    """Keeps yt-dlp quiet on stdout (which is our channel) and remembers what it said."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def debug(self, msg: str) -> None:
        self.lines.append(msg)

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    def warning(self, msg: str) -> None:
        self.lines.append(msg)
        print(msg, file=sys.stderr)

    def error(self, msg: str) -> None:
        self.lines.append(msg)
        print(msg, file=sys.stderr)


def download(url: str, dest: Path, *, max_bytes: int, socket_timeout: float) -> dict[str, Any]:
    from yt_dlp import YoutubeDL  # noqa: PLC0415 - only this child pays for the import

    last = 0.0

    def hook(d: dict[str, Any]) -> None:
        nonlocal last
        now = time.monotonic()
        if d.get("status") == "downloading" and now - last < PROGRESS_EVERY:
            return
        last = now
        emit(
            "progress",
            status=d.get("status"),
            downloaded=d.get("downloaded_bytes") or 0,
            total=d.get("total_bytes") or d.get("total_bytes_estimate"),
            eta=d.get("eta"),
            speed=d.get("speed"),
        )

    logger = _Logger()
    options: dict[str, Any] = {
        "format": "bestaudio/best",
        "outtmpl": str(dest / "source.%(ext)s"),
        "noplaylist": True,
        "quiet": True,
        "no_warnings": False,
        "noprogress": True,
        "logger": logger,
        "progress_hooks": [hook],
        "cachedir": False,  # the root filesystem is read-only in the pod
        "max_filesize": max_bytes,
        "socket_timeout": socket_timeout,
        # The controller owns retries (with backoff and a budget); yt-dlp's own are kept
        # to one so a dead source fails in seconds rather than minutes.
        "retries": 1,
        "fragment_retries": 1,
        "extractor_retries": 0,
        "file_access_retries": 0,
        "restrictfilenames": True,
        "overwrites": True,
        # Nothing is handed to an external program (ffmpeg would fetch HLS/DASH URLs itself,
        # out of the guard's sight): yt-dlp's own downloaders for every protocol, no fixups
        # (the runner's own ffmpeg, restricted to local files, transcodes afterwards).
        "external_downloader": {"default": "native"},
        "hls_prefer_native": True,
        "fixup": "never",
        "ffmpeg_location": str(dest / "no-ffmpeg"),
    }
    with YoutubeDL(options) as ydl:
        info = ydl.extract_info(url, download=True)
    if info is None:
        raise RunnerError(f"yt-dlp found nothing to download at {short_url(url)} (permanent)")
    files = [d.get("filepath") for d in info.get("requested_downloads") or []]
    path = next((Path(f) for f in files if f and Path(f).is_file()), None)
    if path is None:
        raise _no_file_reason(url, logger.lines)
    return {
        "path": str(path),
        "title": info.get("title"),
        "ext": info.get("ext"),
        "extractor": info.get("extractor"),
        "webpage_url": info.get("webpage_url") or url,
    }


def _no_file_reason(url: str, said: list[str]) -> RunnerError:
    for line in said:
        m = re.search(r"larger than max-filesize \((\d+) bytes > (\d+) bytes\)", line)
        if m:
            return RunnerError(
                f"yt-dlp refused {short_url(url)}: the source declares {int(m.group(1)):,} bytes, "
                f"more than the limit of {int(m.group(2)):,} bytes "
                "(AUDIOJOB_MAX_DOWNLOAD_BYTES) (permanent)"
            )
    tail = said[-1].strip() if said else "no reason given"
    return RunnerError(f"yt-dlp wrote no file for {short_url(url)}: {tail[:300]} (permanent)")


def main(argv: list[str]) -> int:
    request = json.loads(argv[1])
    url = str(request["url"])
    guard = Guard(url, NetworkRules.from_env())
    guard.install()
    # curl_cffi (optional in yt-dlp) connects from C, where the guard cannot see; never load it.
    sys.modules["curl_cffi"] = None  # type: ignore[assignment]
    try:
        result = download(
            url,
            Path(request["dest"]),
            max_bytes=int(request["max_bytes"]),
            socket_timeout=float(request["socket_timeout"]),
        )
    except Exception as e:
        refused = guard.refusal_in(e)
        if refused is not None:
            emit("error", message=str(refused), kind="permanent")
            return 1
        if isinstance(e, RunnerError):
            emit("error", message=e.sentence, kind=e.kind)
            return 1
        failure = classify_download_failure(e, url)
        emit("error", message=failure.sentence, kind=failure.kind)
        return 1
    emit("done", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
