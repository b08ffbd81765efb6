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
from tests.runner.conftest import REPO, Media, Runner


def test_the_entry_point_imports_no_pydantic_and_no_kubernetes_client() -> None:
    code = (
        "import sys, runner.__main__; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'kubernetes')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# `python -m runner`, with a line at exit saying whether the cyclic collector runs and how many
# objects were frozen out of it.
GC_AT_EXIT = (
    "import atexit, gc, runpy; "
    "atexit.register(lambda: print('gc', gc.isenabled(), gc.get_freeze_count() > 0)); "
    "runpy.run_module('runner', run_name='__main__', alter_sys=True)"
)


def test_collection_is_off_while_the_runner_starts_and_back_for_the_job(
    runner: Runner, media: Media, out_dir: Path
) -> None:
    (out_dir / "in").mkdir()
    (out_dir / "in" / "tone.wav").write_bytes(media.tone.read_bytes())
    argv = [sys.executable, "-c", GC_AT_EXIT]
    job = runner.env("save", {"input": "in/tone.wav", "format": "mp3"})
    done = subprocess.run(argv, env=job, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "gc True True"  # resumed, the start frozen out

    # A runner refused before its pipeline (an unknown job type) exits without resuming.
    job["AUDIOJOB_TYPE"] = "nope"
    done = subprocess.run(argv, env=job, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 65 and done.stdout.splitlines()[-1] == "gc False False"

    # Imported as a module (the console script, tests), it leaves the collector alone.
    code = "import gc, runner.__main__; print(gc.isenabled())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, check=True)
    assert out.stdout.strip() == b"True"


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
