"""Helpers for tests on the real node: pods placed on it, and the host PIDs behind them."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from devcluster.controlplane import LocalCluster
from devcluster.node import RealNode
from devcluster.node.hoststate import HostState
from devcluster.node.realnode import MACHINE, leftovers
from devcluster.realjobs import (
    RUNNER_UID,
    OutputVolume,
    create_output_volume,
    node_processes,
    pod_pids,
    runner_env,
)
from tests.chart.test_chart import CHART, RUNNER_SA, helm, installed
from tests.e2e.conftest import Controller, Rows
from tests.helpers import wait_for
from tests.runner.conftest import MediaServer, Route, media_server

# `installed`: the chart by helm (the runner's service account, RBAC and policy).
__all__ = ["RUNNER_UID", "OutputVolume", "installed", "node_processes", "pod_pids"]


@pytest.fixture
def machine(cluster: LocalCluster) -> Iterator[HostState]:
    """This machine with no real node on it, kept that way by holding the node lock (another
    process's node would otherwise come and go during the test); yields its host state."""
    cluster.stop_real_node()
    with MACHINE.held():
        assert leftovers() == []
        yield HostState.capture()


def pause_pod(node: RealNode, *, name: str = "") -> dict[str, Any]:
    """A pod running only the node's pause program: namespaces, cgroups and a pod IP, no image
    beyond what the node brings itself."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name or f"pause-{uuid.uuid4().hex[:6]}"},
        "spec": {
            **node.placement(),
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "pause", "image": node.pause_image, "imagePullPolicy": "Never"}
            ],
        },
    }


def run_pod(
    core_v1: kubernetes.client.CoreV1Api, namespace: str, manifest: dict[str, Any]
) -> tuple[Any, float]:
    """Create the pod and wait until it runs; returns it and how long that took (seconds)."""
    t0 = time.monotonic()
    core_v1.create_namespaced_pod(namespace, manifest)
    name = manifest["metadata"]["name"]
    pod = wait_for(
        lambda: (p := core_v1.read_namespaced_pod(name, namespace)).status.phase == "Running" and p,
        timeout=120,
        interval=0.1,
        message=f"pod {name} Running on the real node",
    )
    return pod, time.monotonic() - t0


# --- the mission on real pods: a media server pods can reach, an output volume, a controller --


@pytest.fixture
def node_media_server(realnode: RealNode) -> Iterator[MediaServer]:
    """tests/runner's misbehaving media server, on the bridge address pods reach."""
    with media_server(realnode.network.gateway) as served:
        yield served


@pytest.fixture
def output_volume(cluster: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[OutputVolume]:
    """A PVC bound to a hostPath PV: what the runner writes lands in `host_dir`."""
    volume = create_output_volume(cluster, namespace=namespace, host_dir=tmp_path / "output")
    yield volume
    cluster.kubectl("delete", "pv", volume.pv, "--wait=false", check=False)


@pytest.fixture
def real_controller(
    realnode: RealNode,
    namespace: str,
    installed: str,
    output_volume: OutputVolume,
    tmp_path: Path,
) -> Iterator[Controller]:
    """The controller process (on the host) running its jobs as real pods on the real node,
    with the chart's runner identity (service account, RBAC, admission policy) and the image
    from `make image`. Call `.start()` (extra settings as keyword arguments) in the test."""
    require_app_image(realnode)
    assert realnode.cluster is not None
    ctl = Controller(
        realnode.cluster,
        namespace,
        tmp_path / "jobs.db",
        tmp_path / "controller.log",
        env=runner_env(node=realnode, claim=output_volume.claim, service_account=RUNNER_SA),
    )
    yield ctl
    if ctl.proc is not None:
        ctl.stop(signal.SIGKILL)


@pytest.fixture
def rows(tmp_path: Path) -> Rows:
    return Rows(tmp_path / "jobs.db")


def require_app_image(node: RealNode) -> None:
    """Fail (never skip) with one sentence when `make image` has not put the image there."""
    from devcluster.image import image_name  # the image half of issue 11

    wanted = f"docker.io/library/{image_name()}"
    if wanted not in node.containerd.images():
        pytest.fail(
            f"the real node has no image {wanted}: run `make image` before the real-node tests",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def long_audio(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Ten minutes of mp3, cheap to make, whose ingest (decode, loudness normalisation,
    encode) keeps ffmpeg busy for many seconds."""
    out = tmp_path_factory.mktemp("long") / "long.mp3"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
         "-i", "sine=frequency=220:sample_rate=22050:duration=600",
         "-ac", "1", "-b:a", "32k", str(out)],
        check=True, timeout=120,
    )  # fmt: skip
    return out.read_bytes()


@pytest.fixture
def long_source(node_media_server: MediaServer, long_audio: bytes) -> str:
    """The URL pods fetch the long mp3 from."""
    return node_media_server.serve("/long.mp3", Route(body=long_audio, content_type="audio/mpeg"))


def tone_url(media: MediaServer, directory: Path, *, seconds: int) -> str:
    """A sine WAV of `seconds`, made by ffmpeg in `directory`, served where pods fetch it."""
    tone = directory / "tone.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"sine=frequency=440:duration={seconds}", str(tone)],
        check=True, timeout=60,
    )  # fmt: skip
    return media.serve("/tone.wav", Route(body=tone.read_bytes()))


# --- the chart installed by helm, the controller a pod on the real node -------------------


def real_chart_values(node: RealNode, *, database_url: str, claim: str) -> dict[str, Any]:
    """Values that put the controller and its job pods on `node` with the image from `make
    image` (pullPolicy Never), the database at `database_url` and outputs on `claim`."""
    placement = node.placement()
    return {
        "image": {"pullPolicy": "Never"},
        "database": {"url": database_url},
        "controller": dict(placement),
        "claim": {"pollIntervalSeconds": 1},
        "outputVolume": {"existingClaim": claim},
        # The audio is served on the bridge, a private address the runner's guard refuses
        # unless the user allows it: exactly what a trusted in-cluster source needs.
        "runner": {"allowedNetworks": [f"{node.network.gateway}/32"], **placement},
    }


@contextlib.contextmanager
def helm_installed(
    node: RealNode, namespace: str, values: dict[str, Any], values_file: Path
) -> Iterator[str]:
    """`helm install` of the chart as release "real" in `namespace`; uninstalled after."""
    require_app_image(node)
    assert node.cluster is not None
    values_file.write_text(json.dumps(values))
    where = [f"--namespace={namespace}", f"--kubeconfig={node.cluster.kubeconfig}"]
    helm("install", "real", str(CHART), *where, f"--values={values_file}")
    try:
        yield "real"
    finally:
        helm("uninstall", "real", *where)
