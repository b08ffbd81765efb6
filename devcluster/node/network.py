"""The real node's pod network: one bridge, host-local addresses, and nothing beyond this machine.

Pods reach the bridge's address (this machine: the local HTTP servers tests start), each other,
and the `kubernetes` Service IP, which one DNAT rule sends to the API server on loopback in place
of kube-proxy. They have no default route, and a FORWARD rule drops anything from the pod subnet
to any other destination, so a pod can never send traffic off this machine.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

FORWARD_CHAIN = "AUDIOJOB-NODE-FWD"
DNAT_CHAIN = "AUDIOJOB-NODE-DNAT"
# Named like the node's chains, so a run that dies mid-cut is undone by the next start.
CUT_CHAIN = "AUDIOJOB-NODE-CUT"
NETWORK_NAME = "audiojob-realnode"


@dataclass(frozen=True)
class PodNetwork:
    bridge: str = "audiojob0"
    subnet: str = "10.77.0.0/24"
    gateway: str = "10.77.0.1"
    service_cidr: str = "10.96.0.0/24"
    apiserver_service_ip: str = "10.96.0.1"

    def conflist(self, ipam_dir: Path) -> str:
        return json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": NETWORK_NAME,
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": self.bridge,
                        # The bridge holds the gateway address pods use to reach this machine;
                        # not the default gateway: there is no route off the machine.
                        "isGateway": True,
                        "isDefaultGateway": False,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "dataDir": str(ipam_dir),
                            "ranges": [[{"subnet": self.subnet, "gateway": self.gateway}]],
                            "routes": [{"dst": self.service_cidr, "gw": self.gateway}],
                        },
                    },
                    {"type": "loopback"},
                ],
            },
            indent=2,
        )

    def up(self, *, apiserver_port: int) -> None:
        """The bridge with the gateway address (the kubelet serves on it before any pod
        exists), the DNAT for the `kubernetes` Service and the FORWARD drop."""
        prefix = self.subnet.split("/")[1]
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/{prefix}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        # DNAT to 127.0.0.1 is dropped as a martian unless the bridge allows loopback targets.
        Path(f"/proc/sys/net/ipv4/conf/{self.bridge}/route_localnet").write_text("1")
        _iptables("-t", "nat", "-N", DNAT_CHAIN)
        _iptables(
            "-t", "nat", "-A", DNAT_CHAIN,
            "-d", self.apiserver_service_ip, "-p", "tcp", "--dport", "443",
            "-j", "DNAT", "--to-destination", f"127.0.0.1:{apiserver_port}",
        )  # fmt: skip
        _iptables("-t", "nat", "-I", "PREROUTING", "-i", self.bridge, "-j", DNAT_CHAIN)
        _iptables("-N", FORWARD_CHAIN)
        _iptables("-A", FORWARD_CHAIN, "-s", self.subnet, "!", "-d", self.subnet, "-j", "DROP")
        _iptables("-I", "FORWARD", "-s", self.subnet, "-j", FORWARD_CHAIN)

    def down(self) -> list[str]:
        """Remove the bridge (iptables chains go with the host-state restore)."""
        r = subprocess.run(
            ["ip", "link", "del", self.bridge], capture_output=True, text=True, check=False
        )
        if r.returncode != 0 and "Cannot find device" not in r.stderr:
            return [f"could not delete the bridge {self.bridge}: {r.stderr.strip()}"]
        return []

    def exists(self) -> bool:
        return Path(f"/sys/class/net/{self.bridge}").exists()


@contextlib.contextmanager
def cut_off(*, source: str, to: str, port: int) -> Iterator[Callable[[], int]]:
    """While inside, TCP from the pod address `source` to `to`:`port` on this machine is
    dropped silently (a network partition, not a refusal: the client waits for its own
    timeouts). Yields a function that says how many packets were dropped so far."""
    _iptables("-N", CUT_CHAIN)
    try:
        _iptables("-A", CUT_CHAIN, "-s", source, "-d", to, "-p", "tcp", "--dport", str(port),
                  "-j", "DROP")  # fmt: skip
        _iptables("-I", "INPUT", "-j", CUT_CHAIN)
        try:
            yield lambda: _dropped(CUT_CHAIN, source)
        finally:
            _iptables("-D", "INPUT", "-j", CUT_CHAIN)
    finally:
        _iptables("-F", CUT_CHAIN)
        _iptables("-X", CUT_CHAIN)


def forward_drops(subnet: str) -> int:
    """Packets the FORWARD drop has stopped so far."""
    return _dropped(FORWARD_CHAIN, subnet)


def _dropped(chain: str, source: str) -> int:
    out = subprocess.run(
        ["iptables", "-w", "-L", chain, "-v", "-x", "-n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        words = line.split()
        if "DROP" in words and any(w in (source, f"{source}/32") for w in words):
            return int(words[0])
    raise LookupError(f"no DROP rule for {source} in {chain}")


def _iptables(*args: str) -> None:
    _run("iptables", "-w", *args)


def _run(*argv: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {r.stderr.strip()}")
