"""The pod network's traffic rule: pods reach this machine (the bridge's address, the API server
through the `kubernetes` Service IP) and each other, and nothing else. Checked from inside a real
pod's network namespace with host tools (`nsenter --net`), so the pod needs no image of its own.

The check that the FORWARD drop works sends one datagram that no rule but the drop stops — to
an address routed into a veth pair on this machine whose other end is down, so even a missing
rule sends nothing off the machine — and reads the rule's counter and the veth's counters."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from devcluster.node import RealNode
from devcluster.node.network import forward_drops
from tests.helpers import wait_for
from tests.realnode.conftest import pause_pod, pod_pids, run_pod

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]
# TEST-NET-2 (RFC 5737): documentation only, never routed anywhere.
OFF_MACHINE = "198.51.100.7"
SINK, SINK_PEER = "ajsink0", "ajsink1"


def in_pod(pid: int, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def connect(host: str, port: int, proto: str = "tcp") -> str:
    kind = "SOCK_STREAM" if proto == "tcp" else "SOCK_DGRAM"
    return f"""
import socket
s = socket.socket(socket.AF_INET, socket.{kind})
s.settimeout(5)
try:
    s.connect(({host!r}, {port}))
    if {proto!r} == "udp":
        s.send(b"x")
    print("connected")
except OSError as e:
    print("error", e.errno)
"""


@pytest.fixture
def pod_pid(realnode: RealNode, core_v1: kubernetes.client.CoreV1Api, namespace: str) -> int:
    pod, _ = run_pod(core_v1, namespace, pause_pod(realnode))
    return min(pod_pids(pod.metadata.uid))


@pytest.fixture
def gateway_server(realnode: RealNode) -> Iterator[int]:
    server = http.server.HTTPServer(
        (realnode.network.gateway, 0), http.server.BaseHTTPRequestHandler
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_pods_reach_this_machine(realnode: RealNode, pod_pid: int, gateway_server: int) -> None:
    routes = subprocess.run(
        ["nsenter", f"--net=/proc/{pod_pid}/ns/net", "ip", "route"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "default" not in routes
    assert (
        in_pod(pod_pid, connect(realnode.network.gateway, gateway_server)).stdout.strip()
        == "connected"
    )
    # The API server, on loopback, through the one DNAT rule that stands in for kube-proxy.
    api = in_pod(pod_pid, connect(realnode.network.apiserver_service_ip, 443))
    assert api.stdout.strip() == "connected", api


def test_pods_reach_nothing_else(realnode: RealNode, pod_pid: int) -> None:
    # No route: connect() fails inside the pod before any packet exists.
    assert in_pod(pod_pid, connect(OFF_MACHINE, 80)).stdout.strip() == "error 101"  # ENETUNREACH

    # Give the pod a route anyway (as a pod with NET_ADMIN could) and send one datagram: the
    # FORWARD drop must stop it. The host routes that address into a veth whose peer is down,
    # so a missing drop would hand it to the veth (which discards it), never to the network.
    subprocess.run(
        ["ip", "link", "add", SINK, "type", "veth", "peer", "name", SINK_PEER], check=True
    )
    try:
        subprocess.run(["ip", "link", "set", SINK, "up"], check=True)
        subprocess.run(["ip", "route", "add", f"{OFF_MACHINE}/32", "dev", SINK], check=True)
        subprocess.run(
            [
                "nsenter",
                f"--net=/proc/{pod_pid}/ns/net",
                "ip",
                "route",
                "add",
                f"{OFF_MACHINE}/32",
                "via",
                realnode.network.gateway,
            ],
            check=True,
        )
        stats = Path(f"/sys/class/net/{SINK}/statistics")

        def handed_to_sink() -> int:
            return sum(int((stats / f).read_text()) for f in ("tx_packets", "tx_dropped"))

        drops, sent = forward_drops(realnode.network.subnet), handed_to_sink()
        assert in_pod(pod_pid, connect(OFF_MACHINE, 9, "udp")).stdout.strip() == "connected"
        # Counted when the host's softirq takes the packet, a moment after send() returns.
        wait_for(
            lambda: forward_drops(realnode.network.subnet) == drops + 1,
            timeout=5,
            message="the FORWARD drop's counter to count the datagram",
        )
        assert handed_to_sink() == sent
    finally:
        subprocess.run(["ip", "link", "del", SINK], check=False)
