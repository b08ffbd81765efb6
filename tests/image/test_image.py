"""The image `make image` builds from the Dockerfile, run as the cluster runs it: containerd +
runc, the image's own user, a read-only root filesystem and a writable /tmp (the emptyDir)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devcluster.image import archive_digest, build_image
from devcluster.node import NodeUnavailable
from devcluster.node.containerd import Containerd
from devcluster.node.realnode import containerd_running
from devcluster.pybase import MissingToolError
from runner.contract import EXIT_OK, EXIT_PERMANENT

REPO = Path(__file__).resolve().parents[2]
RUNNER_UID = 10001  # the Dockerfile's USER, which the chart's runAsNonRoot relies on

# Real containers on the real node's containerd (no kubelet needed).
pytestmark = pytest.mark.realnode


@dataclass(frozen=True)
class Image:
    containerd: Containerd
    ref: str

    def run(
        self, *argv: str, scratch: Path, data: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`argv` in a new container of the image: read-only root, `scratch` as /tmp, `data`
        as /data, the image's own user (ctr applies the image config's USER)."""
        mounts = [f"type=bind,src={scratch},dst=/tmp,options=rbind:rw"]
        if data is not None:
            mounts.append(f"type=bind,src={data},dst=/data,options=rbind:rw")
        return subprocess.run(
            [
                "ctr", f"--address={self.containerd.socket}", "--namespace", "k8s.io",
                "run", "--rm", "--read-only",
                *(f"--mount={m}" for m in mounts),
                *(f"--env={k}={v}" for k, v in (env or {}).items()),
                self.ref, f"image-test-{uuid.uuid4().hex[:8]}", *argv,
            ],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    """The image from `make image` in the node's containerd; a machine that cannot build or run
    it fails here with the sentence saying what is missing (never a skip)."""
    try:
        archive = build_image()
    except MissingToolError as e:
        pytest.fail(str(e), pytrace=False)
    with contextlib.ExitStack() as stack:
        try:
            ctrd = stack.enter_context(containerd_running())
        except NodeUnavailable as e:
            pytest.fail(str(e), pytrace=False)
        listed = ctrd.ctr("images", "ls", f"name=={archive.ref}").stdout
        if archive_digest(archive.path) not in listed:
            ctrd.import_archive(archive.path)
        yield Image(containerd=ctrd, ref=archive.ref)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """An empty directory the runner user may write, like the pod's /tmp emptyDir."""
    path = tmp_path / "tmp"
    path.mkdir()
    os.chown(path, RUNNER_UID, RUNNER_UID)
    return path


def test_runs_as_uid_10001_on_a_read_only_root(image: Image, scratch: Path) -> None:
    out = image.run("sh", "-c", "id -u; id -g; touch /usr/x || true; touch /tmp/x", scratch=scratch)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == [str(RUNNER_UID), str(RUNNER_UID)]
    assert "Read-only file system" in out.stderr
    assert (scratch / "x").stat().st_uid == RUNNER_UID


def test_ffmpeg_ffprobe_and_the_pinned_ytdlp(image: Image, scratch: Path) -> None:
    out = image.run(
        "sh", "-c", "ffmpeg -version | head -1; ffprobe -version | head -1; yt-dlp --version",
        scratch=scratch,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    ffmpeg, ffprobe, ytdlp = out.stdout.splitlines()
    assert ffmpeg.startswith("ffmpeg version ") and ffprobe.startswith("ffprobe version ")
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"yt-dlp=={ytdlp}" in pins


def test_controller_entry_point_starts(image: Image, scratch: Path) -> None:
    # A setting it refuses ends start-up after every module (kopf, handlers) has been imported.
    out = image.run(
        "audiojob-controller", scratch=scratch, env={"AUDIOJOB_CLAIM__MAX_CONCURRENT": "0"}
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(
        "audiojob-controller: invalid setting AUDIOJOB_CLAIM__MAX_CONCURRENT"
    )


def test_runner_entry_point_refuses_an_empty_job(image: Image, scratch: Path) -> None:
    out = image.run("audiojob-runner", scratch=scratch)
    assert out.returncode == EXIT_PERMANENT, out.stderr
    assert json.loads(out.stdout)["kind"] == "permanent"


def test_runner_renders_with_only_tmp_and_data_writable(
    image: Image, scratch: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (data / "in").mkdir(parents=True)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
         str(data / "in" / "tone.wav")],
        check=True, timeout=60,
    )  # fmt: skip
    os.chown(data, RUNNER_UID, RUNNER_UID)
    payload = {"input": "in/tone.wav", "format": "mp3", "edits": [{"op": "trim", "end": 2}]}
    out = image.run(
        "audiojob-runner",
        scratch=scratch,
        data=data,
        env={
            "AUDIOJOB_ID": "image-test",
            "AUDIOJOB_TYPE": "preview",
            "AUDIOJOB_ATTEMPT": "1",
            "AUDIOJOB_PAYLOAD": json.dumps(payload),
            "AUDIOJOB_OUTPUT": "/data",
            "AUDIOJOB_TERMINATION_LOG": "/tmp/termination-log",
        },
    )
    assert out.returncode == EXIT_OK, out.stderr
    message = json.loads((scratch / "termination-log").read_text())
    assert message["ok"] is True, message
    written = data / Path(message["result"]["output"]).relative_to("/data")
    assert written.stat().st_uid == RUNNER_UID
    assert message["result"]["duration"] == pytest.approx(2.0, abs=0.1)
