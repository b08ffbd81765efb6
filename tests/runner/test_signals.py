"""SIGTERM during real work: the runner stops its children, cleans up, reports, exits 143."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from runner.contract import EXIT_TERMINATED
from tests.helpers import wait_for
from tests.runner.conftest import (
    RUN_DEADLINE,
    Media,
    MediaServer,
    Popen,
    Route,
    Runner,
    ffmpeg,
    parse_progress,
)


def children_of(pid: int) -> list[int]:
    """Every live descendant of `pid`, from /proc (children sit in sessions of their own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent:
                found.append(child)
                todo.append(child)
    return found


def command_of(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def processes_mentioning(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            except OSError:
                continue
            cmd = command_of(int(entry.name))
            if marker in cmd:
                found.append(f"{entry.name}: {cmd}")
    return found


class StderrCollector:
    """Reads the runner's stderr while it runs, so a test can wait for a stage."""

    def __init__(self, proc: Popen) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)

    def text(self) -> str:
        self._thread.join(timeout=30)
        return "".join(self.lines)

    def stage_seen(self, stage: str) -> bool:
        return any(s == stage for s, _ in parse_progress("".join(self.lines)))


def terminate_and_check(
    runner: Runner, proc: Popen, logs: StderrCollector, marker: str
) -> tuple[str, float]:
    """SIGTERM the runner, then check exit code, message, and that nothing outlived it.
    Returns the error sentence and the seconds from SIGTERM until the runner had exited."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=RUN_DEADLINE)
    stopped_after = time.monotonic() - sent
    run = runner.finish(proc, stderr_read_elsewhere=True)
    stderr = logs.text()
    assert run.code == EXIT_TERMINATED, stderr
    assert run.message["ok"] is False and run.message["kind"] == "transient"
    assert "stopped by SIGTERM" in run.message["error"]
    assert processes_mentioning(marker) == []
    assert runner.scratch_leftovers == []
    return str(run.message["error"]), stopped_after


def test_sigterm_during_transcode_leaves_no_process_behind(
    runner: Runner, out_dir: Path, tmp_path: Path
) -> None:
    # Three hours of audio, slowed down and resampled: minutes of ffmpeg work on this machine.
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:sample_rate=8000:duration=10800",
           "-c:a", "flac", str(out_dir / "long.flac"))  # fmt: skip
    proc = runner.start("save", {"input": "long.flac", "format": "mp3", "sample_rate": 48000,
                                 "edits": [{"op": "speed", "factor": 0.5}]})  # fmt: skip
    logs = StderrCollector(proc)
    try:
        wait_for(lambda: logs.stage_seen("rendering"), timeout=60, message="rendering stage")
        ffmpeg_pid = wait_for(
            lambda: next((p for p in children_of(proc.pid) if "ffmpeg" in command_of(p)), None),
            timeout=30,
            message="the ffmpeg child",
        )
        assert str(out_dir) in command_of(ffmpeg_pid)
        error, _ = terminate_and_check(runner, proc, logs, marker=str(tmp_path))
        assert "during rendering" in error
        assert not Path(f"/proc/{ffmpeg_pid}/cmdline").exists() or "ffmpeg" not in command_of(
            ffmpeg_pid
        )
        assert list(out_dir.glob("job-1*")) == []  # no partial result under the final name
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_sigterm_during_download_leaves_no_ytdlp_process_behind(
    runner: Runner, http_server: MediaServer, media: Media, tmp_path: Path
) -> None:
    body = media.tone.read_bytes()
    # A trickle: the whole file would take minutes.
    url = http_server.serve("/trickle.wav", Route(body, "audio/wav", chunk=2048, delay=0.2))
    proc = runner.start("ingest", {"url": url})
    logs = StderrCollector(proc)
    try:
        wait_for(
            lambda: any(
                s == "downloading" and p > 0 for s, p in parse_progress("".join(logs.lines))
            ),
            timeout=60,
            message="download progress",
        )
        helper = [p for p in children_of(proc.pid) if "runner.download" in command_of(p)]
        assert helper, "yt-dlp runs in a child process"
        error, _ = terminate_and_check(runner, proc, logs, marker=str(tmp_path))
        assert "during downloading" in error
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_child_that_ignores_sigterm_is_killed_within_the_grace_period(
    runner: Runner, tmp_path: Path, out_dir: Path, media: Media
) -> None:
    """The runner SIGKILLs a stubborn child before the kubelet would SIGKILL the runner."""
    (out_dir / "tone.wav").write_bytes(media.tone.read_bytes())
    proc = runner.start(
        "save",
        {"input": "tone.wav"},
        # 6 s: the runner keeps back its full 1.5 s for cleanup, so the bound below has the
        # margin it has in production, not a fraction of a second on a shared machine.
        AUDIOJOB_GRACE_SECONDS="6",
        PATH=f"{stubborn_ffprobe(tmp_path)}:{os.environ['PATH']}",
    )
    logs = StderrCollector(proc)
    try:
        wait_for(
            lambda: any("ffprobe" in command_of(p) for p in children_of(proc.pid)),
            timeout=60,
            message="the ffprobe child",
        )
        _, stopped_after = terminate_and_check(runner, proc, logs, marker=str(tmp_path))
        assert "SIGKILL in 4.5 s" in logs.text()
        # What the log line promises, measured: the child had its 4.5 s, then the runner was
        # gone before the kubelet's SIGKILL at the end of the 6 s grace period.
        assert 4.5 <= stopped_after < 6.0, stopped_after
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def stubborn_ffprobe(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = subprocess.run(["which", "ffprobe"], capture_output=True, text=True, check=True)
    wrapper = bin_dir / "ffprobe"
    # SIG_IGN survives exec, so the sleep ignores SIGTERM too; only SIGKILL of the group ends it.
    wrapper.write_text(f"#!/bin/sh\ntrap '' TERM\nsleep 600\nexec {real.stdout.strip()} \"$@\"\n")
    wrapper.chmod(0o755)
    return bin_dir
