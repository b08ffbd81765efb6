"""Pure parts of the runner: filter building, classification, the reporter's throttle, schema."""

from __future__ import annotations

import errno
import itertools
import json
import math
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yt_dlp.utils import DownloadError, ExtractorError

from runner.edits import atempo_chain, build_filters
from runner.errors import PermanentError, classify_download_failure, network_reason
from runner.job import JobEnv
from runner.messages import FailureMessage, encode_termination_message
from runner.payloads import FadeOut, Gain, Speed, Trim, edits_json_schema
from runner.progress import Progress, ProgressState
from runner.reporter import Reporter

REPO = Path(__file__).resolve().parents[2]


def test_published_edit_schema_matches_the_models() -> None:
    published = json.loads((REPO / "runner" / "edits.schema.json").read_text())
    assert published == edits_json_schema()


@given(st.floats(min_value=0.25, max_value=4.0))
def test_atempo_chain_multiplies_to_the_factor_within_range(factor: float) -> None:
    steps = [float(s.split("=")[1]) for s in atempo_chain(factor)]
    assert all(0.5 <= s <= 2.0 for s in steps)
    assert math.prod(steps) == pytest.approx(factor, rel=1e-5)


def test_filters_track_duration_through_the_chain() -> None:
    plan = build_filters(
        [Trim(op="trim", start=2, end=12), Speed(op="speed", factor=2),
         FadeOut(op="fade_out", duration=1), Gain(op="gain", db=-3.5)],
        input_seconds=20,
    )  # fmt: skip
    assert plan.duration == pytest.approx(5.0)
    assert plan.filters == [
        "atrim=start=2:end=12", "asetpts=PTS-STARTPTS", "atempo=2",
        "afade=t=out:st=4:d=1", "volume=-3.5dB",
    ]  # fmt: skip
    assert build_filters([], input_seconds=3).graph == "anull"
    assert build_filters([], input_seconds=90, limit_seconds=30).duration == 30


def test_trim_beyond_the_audio_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match=r"edit 2 \(trim\) starts at 5 s"):
        build_filters([Speed(op="speed", factor=2), Trim(op="trim", start=5)], input_seconds=8)


@pytest.mark.parametrize(
    ("exc", "reason", "kind"),
    [
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
         "DNS lookup failed (Temporary failure in name resolution)", "transient"),
        (TimeoutError("timed out"), "the connection timed out", "transient"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "the connection was reset", "transient"),
        (OSError(errno.EPIPE, "Broken pipe"), "Broken pipe", "transient"),
    ],
)  # fmt: skip
def test_network_failures_wrapped_by_ytdlp_are_transient(
    exc: BaseException, reason: str, kind: str
) -> None:
    try:
        try:
            raise exc
        except BaseException:
            raise ExtractorError("Unable to download webpage", expected=True) from exc
    except ExtractorError as wrapped:
        outer = DownloadError(f"ERROR: {wrapped}", exc_info=(type(wrapped), wrapped, None))
    assert network_reason(outer) == (reason, kind)
    failure = classify_download_failure(outer, "https://example.org/a.mp3")
    assert (
        failure.sentence
        == f"yt-dlp could not download https://example.org/a.mp3: {reason} ({kind})"
    )
    assert failure.exit_code == 75


def test_unknown_ytdlp_failures_are_permanent_with_its_words() -> None:
    failure = classify_download_failure(
        DownloadError("ERROR: [generic] Unsupported URL: https://example.org/page"), "https://x"
    )
    assert failure.kind == "permanent" and failure.exit_code == 65
    assert failure.sentence.endswith("(permanent)")
    assert "Unsupported URL" in failure.sentence


def test_termination_message_of_a_huge_error_is_valid_json_within_4kib() -> None:
    data = encode_termination_message(
        FailureMessage(ok=False, error="ü" * 10_000, kind="transient")
    )
    assert len(data) <= 4096
    parsed = json.loads(data)
    assert parsed["kind"] == "transient" and parsed["error"].endswith("[truncated]")


def test_job_env_defaults_and_safe_file_stem() -> None:
    env = JobEnv.from_environ({"AUDIOJOB_ID": "user 7/clip: ü", "AUDIOJOB_TYPE": "save"})
    assert (env.attempt, env.output, env.grace_seconds) == (1, "/data", 5.0)
    assert env.file_stem.startswith("user-7-clip") and "/" not in env.file_stem
    assert JobEnv.from_environ({"AUDIOJOB_ID": "abc-1"}).file_stem == "abc-1"
    with pytest.raises(PermanentError, match="AUDIOJOB_GRACE_SECONDS='soon' is not a number"):
        JobEnv.from_environ({"AUDIOJOB_GRACE_SECONDS": "soon"})


class RecordingSink:
    """A sink that records what the reporter sends; the first sends fail like a dead API."""

    min_interval = 0.05

    def __init__(self, failures: int = 0) -> None:
        self.sent: list[tuple[float, ProgressState]] = []
        self.failures = failures
        self.lock = threading.Lock()

    def send(self, state: ProgressState, heartbeat_ms: int) -> None:
        import time

        if self.failures:
            self.failures -= 1
            raise ConnectionError("API server unreachable")
        with self.lock:
            self.sent.append((time.monotonic(), state))


def test_reporter_throttles_and_survives_failing_sends() -> None:
    from tests.helpers import wait_for

    progress = Progress()
    sink = RecordingSink(failures=2)
    reporter = Reporter(progress, sink)
    reporter.start()
    progress.stage("transcoding", 10, 90)
    for i in range(1000):  # far more updates than sends
        progress.update(i / 1000)
    wait_for(lambda: any(s.percent >= 89 for _, s in sink.sent), timeout=10, message="last update")
    progress.finish()
    reporter.stop()
    times = [t for t, _ in sink.sent]
    assert all(b - a >= sink.min_interval * 0.9 for a, b in itertools.pairwise(times))
    assert len(sink.sent) < 100
    assert sink.sent[-1][1] == ProgressState("done", 100)
    percents = [s.percent for _, s in sink.sent]
    assert percents == sorted(percents)


def test_a_pod_gets_its_last_state_even_inside_the_throttle() -> None:
    """`kubectl get pods` shows the finished pod's last stage: a job shorter than the 2 s
    patch interval still ends at "done 100", not at "starting 0"."""
    from runner.reporter import PodAnnotationSink
    from tests.helpers import wait_for

    class PodLike(RecordingSink):
        min_interval = 3600.0  # every send after the first is inside the throttle
        final_wait = PodAnnotationSink.final_wait
        final_unthrottled = PodAnnotationSink.final_unthrottled

    progress = Progress()
    sink = PodLike()
    reporter = Reporter(progress, sink)
    reporter.start()
    progress.stage("transcoding", 10, 90)
    wait_for(lambda: sink.sent, timeout=10, message="the first send")
    progress.finish()
    reporter.stop()
    assert sink.sent[-1][1] == ProgressState("done", 100)
