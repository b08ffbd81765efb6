"""Faults around the real node: the tests end and the node still cleans up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes
import pytest

from devcluster.controlplane import LocalCluster
from devcluster.node.hoststate import HostState
from devcluster.node.realnode import leftovers
from tests.e2e.conftest import Controller, Rows
from tests.realnode.conftest import RUNNER_UID, OutputVolume, pause_pod, run_pod
from tests.realnode.test_node import start
from tests.runner.conftest import MediaServer, Route

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.slow]


def test_a_pod_stuck_terminating_does_not_hold_up_teardown(
    cluster: LocalCluster, machine: HostState, core_v1: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    before = machine
    node, _ = start(cluster)
    pod = pause_pod(node, name="stuck")
    pod["metadata"]["finalizers"] = ["audiojob.dev/test-hold"]
    run_pod(core_v1, namespace, pod)
    core_v1.delete_namespaced_pod("stuck", namespace)
    try:
        assert core_v1.read_namespaced_pod("stuck", namespace).metadata.deletion_timestamp
        cluster.stop_real_node()
        assert leftovers() == []
        assert before.diff(HostState.capture()) == []
    finally:
        core_v1.patch_namespaced_pod("stuck", namespace, {"metadata": {"finalizers": None}})


def test_a_full_output_volume_fails_the_row_and_leaves_no_partial_file(
    real_controller: Controller,
    rows: Rows,
    node_media_server: MediaServer,
    output_volume: OutputVolume,
    tmp_path: Path,
) -> None:
    source = tmp_path / "minute.mp3"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=330:duration=60",
         "-b:a", "128k", str(source)],
        check=True, timeout=60,
    )  # fmt: skip
    url = node_media_server.serve("/minute.mp3", Route(body=source.read_bytes()))
    # 64 KiB of room for a 1 MB result.
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size=64k,uid={RUNNER_UID},gid={RUNNER_UID},mode=0755",
         "tmpfs", str(output_volume.host_dir)],
        check=True,
    )  # fmt: skip
    try:
        rows.insert("no-room", "ingest", {"url": url})
        real_controller.start()
        row = rows.wait_status("no-room", "failed", timeout=180)
        assert "No space left on device" in (row.error or ""), row
        assert row.retry_count == 1, "ENOSPC is transient: retried once, then failed"
        assert list(output_volume.host_dir.rglob("*partial*")) == []
    finally:
        subprocess.run(["umount", "-l", str(output_volume.host_dir)], check=False)
