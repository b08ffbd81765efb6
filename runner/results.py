"""The steps every job ends with: prove the output is real audio, store it and its metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runner import ffmpeg
from runner.errors import PermanentError
from runner.formats import Encoding
from runner.job import Workspace


def check_output(path: Path, encoding: Encoding, *, label: str) -> ffmpeg.MediaInfo:
    """ffprobe must find audio of the expected codec with a positive duration."""
    info = ffmpeg.probe(path, label=label)
    ffmpeg.require_audio(info, label=label)
    if info.audio_codec != encoding.probe_codec:
        raise PermanentError(
            f"{label} has codec {info.audio_codec}, expected {encoding.probe_codec} (permanent)"
        )
    return info


def store_with_metadata(
    ws: Workspace, local: Path, key: str, content_type: str, result: dict[str, Any]
) -> dict[str, Any]:
    """Store the file, then `<key>.json` beside it; the result names both."""
    output = ws.location.store(local, key, content_type)
    full = {
        "output": output,
        "key": key,
        "job_id": ws.env.job_id,
        "attempt": ws.env.attempt,
        **result,
    }
    meta_path = ws.scratch / "metadata.json"
    meta_path.write_text(json.dumps(full, indent=2, sort_keys=True))
    full["metadata"] = ws.location.store(meta_path, f"{key}.json", "application/json")
    return full
