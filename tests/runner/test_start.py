"""What keeps the runner's start cheap (bench/bench_runner.py, "the runner's fixed cost"): no
pydantic and no kubernetes client before the job's first ffprobe has started, and that early
probe only for a file the payload's own path rule allows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner import ffmpeg
from runner.__main__ import probe_input_early
from runner.job import JobEnv, Workspace
from runner.outputs import DirectoryLocation
from runner.progress import Progress
from tests.runner.conftest import REPO, Media


def test_the_entry_point_imports_no_pydantic_and_no_kubernetes_client() -> None:
    code = (
        "import sys, runner.__main__; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'kubernetes')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def workspace(tmp_path: Path, job_type: str, payload: dict[str, object] | str) -> Workspace:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    env = JobEnv.from_environ({"AUDIOJOB_TYPE": job_type, "AUDIOJOB_PAYLOAD": text})
    return Workspace(
        env=env, scratch=tmp_path, location=DirectoryLocation(tmp_path), progress=Progress()
    )


def test_a_renders_input_is_probed_early_and_the_render_takes_that_answer(
    tmp_path: Path, media: Media
) -> None:
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "tone.wav"
    source.write_bytes(media.tone.read_bytes())
    ws = workspace(tmp_path, "save", {"input": "in/tone.wav"})
    probe_input_early(ws.env, ws)
    assert list(ffmpeg._started) == [source]
    info = ffmpeg.probe(source, label="input")
    assert ffmpeg._started == {}
    assert info.audio_codec == "pcm_s16le" and info.duration == pytest.approx(6, abs=0.1)


@pytest.mark.parametrize(
    ("job_type", "payload"),
    [
        ("save", {"input": "../outside.wav"}),
        ("save", {"input": "/etc/passwd"}),
        ("save", {"input": "s3://bucket/key.wav"}),
        ("save", {"input": "missing.wav"}),
        ("save", "not json"),
        ("ingest", {"url": "https://example.com/a.mp3"}),
    ],
)
def test_no_early_probe_outside_the_path_rule(
    tmp_path: Path, job_type: str, payload: dict[str, object] | str
) -> None:
    ws = workspace(tmp_path, job_type, payload)
    probe_input_early(ws.env, ws)
    assert ffmpeg._started == {}
