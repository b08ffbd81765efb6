"""The real node's own life: it starts next to kwok's nodes, runs a pod, and stopping it puts
the machine back exactly as it was — also when its kubelet died first."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import kubernetes
import pytest

from devcluster.controlplane import LocalCluster
from devcluster.node import TAINT_KEY, NodeUnavailable, RealNode
from devcluster.node.hoststate import HostState
from devcluster.node.realnode import leftovers
from tests.helpers import wait_for
from tests.realnode.conftest import pause_pod, pod_pids, run_pod

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.slow]


def start(cluster: LocalCluster) -> tuple[RealNode, float]:
    t0 = time.monotonic()
    try:
        node = cluster.start_real_node()
    except NodeUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    return node, time.monotonic() - t0


def test_start_and_stop_twice_leave_nothing_behind(
    cluster: LocalCluster, machine: HostState, core_v1: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    before = machine
    for round_ in (1, 2):
        node, took = start(cluster)
        pod, latency = run_pod(core_v1, namespace, pause_pod(node))
        assert pod.spec.node_name == node.name
        assert pod.status.pod_ip.startswith("10.77.0.")
        assert pod_pids(pod.metadata.uid), "the pod's processes are in the node's cgroup tree"
        print(f"round {round_}: node Ready in {took:.1f}s, pause pod Running in {latency:.1f}s")
        cluster.stop_real_node()
        assert leftovers() == []
        assert before.diff(HostState.capture()) == []


def test_kwok_nodes_stay_for_scripted_pods(
    realnode: RealNode, core_v1: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    nodes = {n.metadata.name: n for n in core_v1.list_node().items}
    real = nodes.pop(realnode.name)
    assert nodes and all(
        n.metadata.annotations.get("kwok.x-k8s.io/node") == "fake" for n in nodes.values()
    )
    assert "kwok.x-k8s.io/node" not in (real.metadata.annotations or {})
    assert real.status.node_info.container_runtime_version.startswith("containerd://1.")
    # Pods that do not ask for the real node never land there (its taint), and kwok's scripted
    # stages never run on it.
    assert TAINT_KEY in [t.key for t in real.spec.taints]
    pods = []
    for i in range(3):
        pod = pause_pod(realnode, name=f"kwok-{i}")
        del pod["spec"]["nodeSelector"], pod["spec"]["tolerations"]
        pods.append(core_v1.create_namespaced_pod(namespace, pod).metadata.name)
    placed = wait_for(
        lambda: (
            all(n := [core_v1.read_namespaced_pod(p, namespace).spec.node_name for p in pods]) and n
        ),
        timeout=30,
        message="the scheduler to place the pods",
    )
    assert all(name.startswith("kwok-node-") for name in placed), placed


def test_a_dead_kubelet_still_leaves_nothing_behind(
    cluster: LocalCluster, machine: HostState, core_v1: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    before = machine
    node, _ = start(cluster)
    pod, _ = run_pod(core_v1, namespace, pause_pod(node))
    os.kill(node.procs["kubelet"].pid, signal.SIGKILL)
    wait_for(lambda: node.procs["kubelet"].poll() is not None, timeout=10, message="kubelet gone")
    assert pod_pids(pod.metadata.uid), "the pod outlives its kubelet"
    cluster.stop_real_node()
    assert leftovers() == []
    assert before.diff(HostState.capture()) == []


def test_a_crashed_run_is_cleaned_up_by_the_next_start(
    cluster: LocalCluster, machine: HostState, core_v1: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    """The process that started a node dies without stopping it (its processes, mounts and
    chains stay); the next start undoes all of it first."""
    before = machine
    node, _ = start(cluster)
    run_pod(core_v1, namespace, pause_pod(node))
    # What a crash leaves: the daemons and pods running, the lock released by the kernel.
    node.abandon()
    cluster.node = None
    assert leftovers() != []
    node, _ = start(cluster)
    cluster.stop_real_node()
    assert leftovers() == []
    assert before.diff(HostState.capture()) == []


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"PATH": "/nonexistent"}, "`containerd`"),
        ({"AUDIOJOB_TEST_ASSETS": "/nonexistent"}, "/nonexistent/pause"),
    ],
)
def test_a_missing_piece_fails_with_one_sentence(
    cluster: LocalCluster,
    machine: HostState,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    missing: str,
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(NodeUnavailable) as e:
        RealNode(cluster=cluster).start()
    message = str(e.value)
    assert missing in message
    assert "make node" in message
    assert "\n" not in message
    assert not Path("/run/audiojob-operator/containerd").exists()
