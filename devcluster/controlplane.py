"""A real, local Kubernetes control plane for tests and the demo.

etcd, kube-apiserver (TLS, token auth, RBAC, admission incl. ServiceAccount and
ValidatingAdmissionPolicy), kube-controller-manager (Jobs create Pods, the garbage collector
runs), kube-scheduler, and kwok simulating a few nodes whose pods follow the stages in
`kwok-stages.yaml`. Everything listens on loopback ports picked at start; state lives in one
directory that `stop()` removes.

    with LocalCluster() as cluster:
        api = cluster.api_client()

Binaries come from `build-binaries.sh` (cached under ~/.cache/audiojob-operator/bin), or from
the directory named by AUDIOJOB_TEST_ASSETS.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kubernetes

from devcluster.pki import make_pki, write_kubeconfig
from devcluster.procs import terminate, wait_while_running

if TYPE_CHECKING:
    from devcluster.node.realnode import RealNode

HERE = Path(__file__).resolve().parent
STAGES = HERE / "kwok-stages.yaml"
CACHE = Path(os.environ.get("AUDIOJOB_CACHE", Path.home() / ".cache" / "audiojob-operator"))
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
    "helm",
    "keda-operator",
)
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"


def bin_dir() -> Path:
    assets = os.environ.get("AUDIOJOB_TEST_ASSETS")
    return Path(assets) if assets else CACHE / "bin"


def binary(name: str) -> Path:
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"{path} is missing: run `make binaries` (or point AUDIOJOB_TEST_ASSETS at a "
            "directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler, "
            "kwok, kubectl, helm, keda-operator, prometheus and promtool)"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake_node(name: str) -> dict[str, Any]:
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"allocatable": capacity, "capacity": capacity},
    }


@dataclass
class LocalCluster:
    """One control plane. `start()` returns when the API is ready, nodes are Ready and the
    `default` ServiceAccount exists; `stop()` kills every process it started and removes state."""

    state_dir: Path | None = None
    nodes: int = 3
    # Also a real node (containerd + kubelet, devcluster/node/) beside the kwok ones.
    real_node: bool = False
    startup_timeout: float = 180.0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    argvs: dict[str, list[str]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    admin_token: str = ""
    node: RealNode | None = None
    _owns_state_dir: bool = False

    # -- paths -----------------------------------------------------------------
    @property
    def root(self) -> Path:
        assert self.state_dir is not None, "cluster not started"
        return self.state_dir

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def log(self, component: str) -> Path:
        return self.root / "logs" / f"{component}.log"

    # -- lifecycle --------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        if self.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="audiojob-cluster-"))
            self._owns_state_dir = True
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        make_pki(self.pki)
        self.ports = {
            k: free_port() for k in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler")
        }
        self.admin_token = secrets.token_hex(16)
        tokens = {
            "admin": (self.admin_token, "admin", "system:masters"),
            "kcm": (secrets.token_hex(16), "system:kube-controller-manager", ""),
            "scheduler": (secrets.token_hex(16), "system:kube-scheduler", ""),
            # kwok plays the kubelet of every fake node; it is a simulator, not a workload.
            "kwok": (secrets.token_hex(16), "kwok", "system:masters"),
        }
        (self.pki / "tokens.csv").write_text(
            "".join(
                f'{tok},{user},uid-{name},"{groups}"\n'
                for name, (tok, user, groups) in tokens.items()
            )
        )
        for name, (tok, _, _) in tokens.items():
            path = self.kubeconfig if name == "admin" else self.root / f"{name}.kubeconfig"
            write_kubeconfig(path, server=self.server, ca_file=self.ca_file, token=tok, user=name)
        self._save_state()

        self._spawn(
            "etcd",
            [
                str(binary("etcd")),
                "--name=node0",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self.ports['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{self.ports['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{self.ports['etcd-peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{self.ports['etcd-peer']}",
                f"--initial-cluster=node0=http://127.0.0.1:{self.ports['etcd-peer']}",
                # Test state is thrown away; fsync only costs time.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                str(binary("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-issuer={SA_ISSUER}",
                f"--api-audiences={SA_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--allow-privileged=true",
                # A real kubelet is reached at its node's IP (there is no DNS for node names),
                # authenticated by the apiserver's client cert.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                # The aggregation layer (for KEDA's external metrics API).
                f"--requestheader-client-ca-file={pki / 'ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                "--enable-aggregator-routing=true",
                # Benchmarks create a thousand Jobs; API priority and fairness would throttle them.
                "--enable-priority-and-fairness=false",
                "--max-requests-inflight=0",
                "--max-mutating-requests-inflight=0",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait(self._apiserver_ready, "kube-apiserver /readyz")
        self._spawn(
            "kube-controller-manager",
            [
                str(binary("kube-controller-manager")),
                f"--kubeconfig={self.root / 'kcm.kubeconfig'}",
                f"--authentication-kubeconfig={self.root / 'kcm.kubeconfig'}",
                f"--authorization-kubeconfig={self.root / 'kcm.kubeconfig'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['kcm']}",
                "--controllers=*",
                "--concurrent-job-syncs=20",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(binary("kube-scheduler")),
                f"--kubeconfig={self.root / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={self.root / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.root / 'scheduler.kubeconfig'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['scheduler']}",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--v=1",
            ],
        )
        self._spawn(
            "kwok",
            [
                str(binary("kwok")),
                f"--kubeconfig={self.root / 'kwok.kubeconfig'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--manage-nodes-with-label-selector=",
                f"--config={STAGES}",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.1",
                "--node-lease-duration-seconds=40",
            ],
        )
        core = kubernetes.client.CoreV1Api(self.api_client())
        for i in range(self.nodes):
            with contextlib.suppress(kubernetes.client.ApiException):
                # The client sends plain dicts as they are; its V1Node type is only a hint.
                core.create_node(fake_node(f"kwok-node-{i}"))  # type: ignore[arg-type]
        self._wait(lambda: self._nodes_ready(core), "kwok nodes Ready")
        self._wait(lambda: self._default_sa(core), "the default ServiceAccount")
        if self.real_node:
            self.start_real_node()

    def start_real_node(self) -> RealNode:
        """Start the real node (once); raises NodeUnavailable saying what this machine lacks."""
        from devcluster.node.realnode import RealNode

        if self.node is None:
            node = RealNode(cluster=self, startup_timeout=self.startup_timeout)
            node.start()
            self.node = node
        return self.node

    def stop_real_node(self) -> None:
        node, self.node = self.node, None
        if node is not None:
            node.stop()

    def stop(self) -> None:
        try:
            self.stop_real_node()
        finally:
            self._stop_control_plane()

    def _stop_control_plane(self) -> None:
        for name in reversed(list(self.procs)):
            terminate(self.procs[name])
        self.procs.clear()
        if self.state_dir is not None and self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def restart_apiserver(self, down_seconds: float = 0.0) -> None:
        """Stop kube-apiserver (SIGTERM, then SIGKILL), stay down `down_seconds`, start it again
        with the same arguments and return once /readyz answers. etcd keeps every object."""
        terminate(self.procs.pop("kube-apiserver"))
        time.sleep(down_seconds)
        self._spawn("kube-apiserver", self.argvs["kube-apiserver"])
        self._wait(self._apiserver_ready, "kube-apiserver /readyz after restart")
        # kube-controller-manager's informers back off after losing the server (up to a
        # minute after several restarts): return only once they serve new namespaces again,
        # or the next test's namespace waits in vain for its default ServiceAccount.
        core = kubernetes.client.CoreV1Api(self.api_client())
        probe = f"probe-{secrets.token_hex(4)}"
        core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=probe))
        )
        self._wait(
            lambda: core.read_namespaced_service_account("default", probe),
            "kube-controller-manager to serve a new namespace after the restart",
        )
        core.delete_namespace(probe, propagation_policy="Background")

    # -- clients ----------------------------------------------------------------
    def api_client(self) -> kubernetes.client.ApiClient:
        client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            str(self.kubeconfig)
        )
        return client

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            input=input,
        )

    # -- internals --------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        self.argvs[name] = list(argv)
        log = self.log(name).open("ab")
        # Own process group, so stop() can take the whole tree down with one signal.
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._save_state()

    def _save_state(self) -> None:
        state = {
            "pids": {n: p.pid for n, p in self.procs.items()},
            "ports": self.ports,
            "kubeconfig": str(self.kubeconfig),
        }
        (self.root / "state.json").write_text(json.dumps(state, indent=2))

    def _wait(self, predicate: Any, what: str) -> None:
        wait_while_running(
            predicate, what, procs=self.procs, log=self.log, timeout=self.startup_timeout
        )

    def _apiserver_ready(self) -> bool:
        import ssl
        import urllib.request

        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
            return bool(resp.status == 200)

    @staticmethod
    def _nodes_ready(core: kubernetes.client.CoreV1Api) -> bool:
        nodes = core.list_node().items
        return bool(nodes) and all(
            any(
                c.type == "Ready" and c.status == "True"
                for c in ((n.status and n.status.conditions) or [])
            )
            for n in nodes
        )

    @staticmethod
    def _default_sa(core: kubernetes.client.CoreV1Api) -> bool:
        core.read_namespaced_service_account("default", "default")
        return True
