"""preview and save with every edit, measured on the output with ffprobe and volumedetect."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from runner.contract import EXIT_OK, EXIT_PERMANENT
from tests.runner.conftest import Media, Runner, duration_of, mean_volume, probe


@pytest.fixture
def tone(media: Media, out_dir: Path) -> str:
    """The 6 s tone, placed in the output location where render inputs live."""
    (out_dir / "in").mkdir()
    shutil.copyfile(media.tone, out_dir / "in" / "tone.wav")
    return "in/tone.wav"


def save(runner: Runner, tone: str, edits: list[dict[str, Any]], **more: Any) -> Path:
    run = runner.run("save", {"input": tone, "format": "wav", "edits": edits, **more})
    assert run.code == EXIT_OK, run.stderr
    return Path(run.result["output"])


def test_trim_keeps_the_window(runner: Runner, tone: str) -> None:
    out = save(runner, tone, [{"op": "trim", "start": 1.5, "end": 4.0}])
    assert duration_of(out) == pytest.approx(2.5, abs=0.02)


def test_trim_past_the_end_is_permanent(runner: Runner, tone: str) -> None:
    run = runner.run("save", {"input": tone, "edits": [{"op": "trim", "start": 10}]})
    assert (run.code, run.message["kind"]) == (EXIT_PERMANENT, "permanent")
    assert run.message["error"].startswith("edit 1 (trim) starts at 10 s but the audio is only")


def test_fade_in_starts_quiet(runner: Runner, tone: str) -> None:
    out = save(runner, tone, [{"op": "fade_in", "duration": 3}])
    assert mean_volume(out, 0, 0.5) < mean_volume(out, 4, 1) - 10


def test_fade_out_ends_quiet(runner: Runner, tone: str) -> None:
    out = save(runner, tone, [{"op": "fade_out", "duration": 3}])
    assert duration_of(out) == pytest.approx(6.0, abs=0.02)
    assert mean_volume(out, 5.5, 0.5) < mean_volume(out, 1, 1) - 10


def test_gain_changes_level_by_the_decibels_asked(runner: Runner, tone: str, media: Media) -> None:
    out = save(runner, tone, [{"op": "gain", "db": -12}])
    assert mean_volume(out) == pytest.approx(mean_volume(media.tone) - 12, abs=0.5)


@pytest.mark.parametrize(("factor", "seconds"), [(2.0, 3.0), (0.25, 24.0), (3.0, 2.0)])
def test_speed_changes_duration_through_chained_atempo(
    runner: Runner, tone: str, factor: float, seconds: float
) -> None:
    out = save(runner, tone, [{"op": "speed", "factor": factor}])
    assert duration_of(out) == pytest.approx(seconds, rel=0.02)


def test_save_with_every_edit_in_order(runner: Runner, tone: str, out_dir: Path) -> None:
    edits = [
        {"op": "trim", "start": 1, "end": 5},  # 4 s
        {"op": "speed", "factor": 2},  # 2 s
        {"op": "fade_in", "duration": 0.5},
        {"op": "fade_out", "duration": 0.5},
        {"op": "gain", "db": 3},
    ]
    run = runner.run("save", {"input": tone, "format": "flac", "sample_rate": 48000,
                              "edits": edits, "output_name": "final.flac"})  # fmt: skip
    assert run.code == EXIT_OK, run.stderr
    out = out_dir / "final.flac"
    assert run.result["output"] == str(out) and run.result["edits"] == 5
    assert run.result["expected_duration"] == pytest.approx(2.0)
    stream = probe(out)["streams"][0]
    assert (stream["codec_name"], stream["sample_rate"]) == ("flac", "48000")
    assert duration_of(out) == pytest.approx(2.0, abs=0.03)
    assert mean_volume(out, 0, 0.1) < mean_volume(out, 0.8, 0.4) - 6
    assert mean_volume(out, 1.9, 0.1) < mean_volume(out, 0.8, 0.4) - 6
    stages = [stage for stage, _ in run.progress_lines]
    assert stages[0] == "starting" and stages[-1] == "done"


def test_preview_is_short_low_bitrate_and_edited(runner: Runner, tone: str) -> None:
    edits = [
        {"op": "fade_in", "duration": 1},
        {"op": "gain", "db": -6},
        {"op": "speed", "factor": 0.5},  # 12 s, cut to the preview's 4 s
        {"op": "trim", "start": 0.5},
        {"op": "fade_out", "duration": 1},
    ]
    run = runner.run("preview", {"input": tone, "edits": edits, "max_duration": 4,
                                 "bitrate_kbps": 32})  # fmt: skip
    assert run.code == EXIT_OK, run.stderr
    out = Path(run.result["output"])
    assert out.name == "job-1.preview.mp3" and run.result["preview"] is True
    info = probe(out)
    assert info["streams"][0]["codec_name"] == "mp3"
    assert int(info["format"]["bit_rate"]) < 40_000
    assert duration_of(out) == pytest.approx(4.0, abs=0.1)


def test_missing_input_and_escaping_paths_are_permanent(runner: Runner, tone: str) -> None:
    run = runner.run("save", {"input": "in/absent.wav"})
    assert (run.code, run.message["kind"]) == (EXIT_PERMANENT, "permanent")
    assert "'in/absent.wav' does not exist" in run.message["error"]
    run = runner.run("preview", {"input": "../../etc/passwd"})
    assert run.code == EXIT_PERMANENT
    assert "must be a relative path inside the output location" in run.message["error"]


def test_input_that_is_not_audio_is_permanent(runner: Runner, media: Media, out_dir: Path) -> None:
    shutil.copyfile(media.picture, out_dir / "cover.png")
    run = runner.run("save", {"input": "cover.png"})
    assert (run.code, run.message["kind"]) == (EXIT_PERMANENT, "permanent")
    assert run.message["error"].startswith("input 'cover.png' is not audio")
