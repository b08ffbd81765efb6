"""ingest: yt-dlp fetches the best audio from a URL, ffmpeg normalises it, ffprobe checks it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from runner import ffmpeg, procs
from runner.errors import RunnerError, Terminated, TransientError
from runner.formats import ENCODINGS, codec_args, supported_rate
from runner.job import Workspace
from runner.outputs import S3Location
from runner.payloads import IngestPayload
from runner.progress import human_bytes
from runner.results import check_output, store_with_metadata

# EBU R128 streaming target, the same single-pass settings most podcast tools use.
LOUDNORM = "loudnorm=I=-16:TP=-1.5:LRA=11"


def run_ingest(payload: IngestPayload, ws: Workspace) -> dict[str, Any]:
    ws.progress.stage("downloading", 0, 60)
    fetched = fetch_source(payload.url, ws)
    source = Path(fetched["path"])
    info = ffmpeg.probe(source, label=f"the download from {payload.url[:200]}")
    duration = ffmpeg.require_audio(info, label=f"the download from {payload.url[:200]}")

    encoding = ENCODINGS[payload.format]
    rate = supported_rate(encoding, payload.sample_rate)
    out = ws.scratch / f"output.{encoding.extension}"
    filters = [LOUDNORM] if payload.normalize_loudness else []
    ws.progress.stage("transcoding", 60, 95)
    ffmpeg.transcode(
        [
            "-i",
            str(source),
            "-map",
            "0:a:0",
            "-vn",
            "-sn",
            "-dn",
            *(["-af", ",".join(filters)] if filters else []),
            "-map_metadata",
            "-1",
            *codec_args(encoding, sample_rate=rate, bitrate_kbps=None),
            str(out),
        ],
        expected_seconds=duration,
        on_progress=ws.progress.update,
        log_path=ws.scratch / "ffmpeg.log",
        label=f"transcode the download from {payload.url[:200]} to {payload.format}",
    )
    checked = check_output(out, encoding, label=f"the {payload.format} output")

    ws.progress.stage("uploading" if isinstance(ws.location, S3Location) else "storing", 95, 100)
    key = ws.output_key(payload.output_name, "", encoding.extension)
    result: dict[str, Any] = {
        "duration": round(checked.duration or 0.0, 3),
        "codec": checked.audio_codec,
        "format": payload.format,
        "sample_rate": checked.sample_rate,
        "channels": checked.channels,
        "size": checked.size,
        "title": fetched.get("title"),
        "source_url": payload.url,
        "loudness_normalized": payload.normalize_loudness,
    }
    return store_with_metadata(ws, out, key, encoding.content_type, result)


def fetch_source(url: str, ws: Workspace) -> dict[str, Any]:
    """Run the download child and turn its JSON lines into progress, a result or an error."""
    request = {
        "url": url,
        "dest": str(ws.scratch),
        "max_bytes": ws.env.max_download_bytes,
        "socket_timeout": ws.env.socket_timeout,
    }
    stderr_path = ws.scratch / "yt-dlp.log"
    done: dict[str, Any] | None = None
    error: RunnerError | None = None
    with stderr_path.open("wb") as stderr:
        proc = procs.spawn(
            [sys.executable, "-m", "runner.download", json.dumps(request)],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue  # a stray print from a library; the protocol lines are JSON
                kind = event.get("event")
                if kind == "progress":
                    _report_download(event, ws)
                elif kind == "done":
                    done = event
                elif kind == "error":
                    error = RunnerError(str(event["message"]), event.get("kind", "permanent"))
            proc.wait()
        finally:
            procs.kill_if_running(proc)
            procs.release(proc)
    if procs.terminating():
        raise Terminated
    if error is not None:
        raise error
    if done is None or proc.returncode != 0:
        tail = stderr_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise TransientError(
            f"the yt-dlp download process for {url[:200]} exited with code {proc.returncode} "
            f"without a result: {tail[0][:300]} (transient)"
        )
    return done


def _report_download(event: dict[str, Any], ws: Workspace) -> None:
    done = float(event.get("downloaded") or 0)
    total = event.get("total")
    parts = [f"downloaded={human_bytes(done)}"]
    fraction = 0.0
    if total:
        fraction = done / float(total)
        parts.append(f"total={human_bytes(float(total))}")
    if event.get("eta") is not None:
        parts.append(f"eta={int(event['eta'])}s")
    if event.get("status") == "finished":
        fraction = 1.0
    ws.progress.update(fraction, " ".join(parts))
