"""ffprobe and ffmpeg as tracked children: probing media and transcoding with progress."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runner import procs
from runner.errors import PermanentError, RunnerError, Terminated

PROBE_TIMEOUT = 60.0  # seconds; a probe reads headers only, anything slower is a broken file

# ffmpeg reads only the local file it is given: a "media file" that is really a playlist
# would otherwise make it fetch URLs from inside the cluster, past the address guard.
LOCAL_ONLY = ("-protocol_whitelist", "file")
# Playlist formats name other files or URLs; an audio input is never one of them.
PLAYLIST_FORMATS = frozenset({"hls", "concat", "dash", "ffmetadata"})


@dataclass(frozen=True)
class MediaInfo:
    duration: float | None
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None
    format_name: str
    size: int


_started: dict[Path, subprocess.Popen[bytes]] = {}


def _spawn_probe(path: Path) -> subprocess.Popen[bytes]:
    argv = [
        "ffprobe", "-v", "error", *LOCAL_ONLY, "-print_format", "json", "-show_format",
        "-show_streams", str(path),
    ]  # fmt: skip
    return procs.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def start_probe(path: Path) -> None:
    """Start ffprobe on `path` now, in the background; the next `probe(path)` takes its answer
    (the runner starts its input's probe before it imports pydantic, the larger part of its
    start). A probe never collected is killed with every other child at the end."""
    if path not in _started:
        _started[path] = _spawn_probe(path)


def probe(path: Path, *, label: str) -> MediaInfo:
    """What ffprobe sees in `path`; PermanentError when it is not readable media at all."""
    proc = _started.pop(path, None) or _spawn_probe(path)
    try:
        out, err = proc.communicate(timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise PermanentError(
            f"{label} could not be read: ffprobe took longer than {PROBE_TIMEOUT:.0f} s (permanent)"
        ) from None
    finally:
        procs.kill_if_running(proc)
        procs.release(proc)
    procs.checkpoint()
    if proc.returncode != 0:
        reason = _last_line(err.decode(errors="replace")) or f"ffprobe exit code {proc.returncode}"
        raise PermanentError(f"{label} is corrupt or not a media file: {reason} (permanent)")
    data = json.loads(out or b"{}")
    fmt = data.get("format", {})
    audio = next((s for s in data.get("streams", []) if s.get("codec_type") == "audio"), None)
    if PLAYLIST_FORMATS & set(str(fmt.get("format_name", "")).split(",")):
        raise PermanentError(
            f"{label} is a {fmt['format_name']} playlist, not an audio file; "
            "it is not followed (permanent)"
        )
    duration = _float(fmt.get("duration"))
    if audio is not None and duration is None:
        duration = _float(audio.get("duration"))
    return MediaInfo(
        duration=duration,
        audio_codec=audio.get("codec_name") if audio else None,
        sample_rate=int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
        channels=audio.get("channels") if audio else None,
        format_name=str(fmt.get("format_name", "")),
        size=path.stat().st_size,
    )


def require_audio(info: MediaInfo, *, label: str) -> float:
    """The duration of real audio, or PermanentError explaining what is wrong with it."""
    if info.audio_codec is None:
        kind = f"a {info.format_name} file" if info.format_name else "a file"
        raise PermanentError(f"{label} is not audio: ffprobe found {kind} with no audio stream")
    if info.duration is None or info.duration <= 0:
        raise PermanentError(
            f"{label} has no playable audio: ffprobe reports a duration of "
            f"{info.duration if info.duration is not None else 'unknown'} (permanent)"
        )
    return info.duration


def transcode(
    args: Sequence[str],
    *,
    expected_seconds: float,
    on_progress: Callable[[float], None],
    log_path: Path,
    label: str,
) -> None:
    """Run `ffmpeg <args>`, reporting the fraction done from its -progress output."""
    inputs = [a for arg in args for a in ((*LOCAL_ONLY, arg) if arg == "-i" else (arg,))]
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-progress", "pipe:1", "-y", *inputs]
    with log_path.open("wb") as log_file:
        proc = procs.spawn(argv, stdout=subprocess.PIPE, stderr=log_file)
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                key, _, value = raw.decode(errors="replace").strip().partition("=")
                # out_time_us is microseconds; older ffmpeg mislabels it as out_time_ms too.
                if key == "out_time_us" and value.isdigit() and expected_seconds > 0:
                    on_progress(min(1.0, int(value) / 1e6 / expected_seconds))
            proc.wait()
        finally:
            procs.kill_if_running(proc)
            procs.release(proc)
    if procs.terminating():
        raise Terminated
    if proc.returncode != 0:
        reason = _last_line(log_path.read_text(errors="replace"))
        raise RunnerError(
            f"ffmpeg could not {label}: {reason or f'exit code {proc.returncode}'} (permanent)",
            "permanent",
        )


def _float(value: object) -> float | None:
    if value in (None, "N/A"):
        return None
    with contextlib.suppress(TypeError, ValueError):
        return float(value)  # type: ignore[arg-type]
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
