"""A real node for the local control plane: containerd + runc + the kubelet + a bridge network,
running real containers next to kwok's simulated nodes.

    with LocalCluster(real_node=True) as cluster:
        cluster.node.name          # schedule with a nodeSelector and the TAINT_KEY toleration

Only one real node runs on a machine at a time (a lock file in the cache); the host state it
changes is recorded before it starts and restored when it stops, also after a crash of the
process that started it (the next start cleans up first). A machine that lacks something the
node needs makes `start()` raise `NodeUnavailable` with one sentence naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kubernetes

from devcluster.controlplane import CACHE, bin_dir, free_port
from devcluster.node.cgroups import CgroupTree, NodeUnavailable, require_cgroup_v1_memory
from devcluster.node.containerd import Containerd, archive_refs, content_key, pause_archive
from devcluster.node.hoststate import HostState, mounts_under, remove_tree, unmount_all
from devcluster.node.kubelet import TAINT_KEY, Kubelet
from devcluster.node.lock import MachineLock
from devcluster.node.network import PodNetwork
from devcluster.procs import kill_pids, wait_while_running

if TYPE_CHECKING:
    from devcluster.controlplane import LocalCluster

WORK = CACHE / "run" / "realnode"
RUNTIME_STATE = Path("/run/audiojob-operator/containerd")
MACHINE = MachineLock(CACHE / "realnode.lock")
IMAGES = CACHE / "images"
CNI_PLUGINS = ("bridge", "host-local", "loopback")
TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip")


def preflight(*, kubelet: bool = True) -> None:
    """Raise NodeUnavailable naming the first thing this machine lacks (for containerd alone
    when `kubelet` is false)."""
    if os.geteuid() != 0:
        raise NodeUnavailable(
            "the real node needs root (it creates a bridge, cgroups and mounts): run as root"
        )
    for tool in TOOLS:
        if shutil.which(tool) is None:
            raise NodeUnavailable(
                f"the real node needs `{tool}`, which is not installed: run `make node` "
                "(it installs containerd, runc and iptables with apt)"
            )
    needed = [bin_dir() / "pause"]
    if kubelet:
        needed += [bin_dir() / "kubelet", *(bin_dir() / "cni" / p for p in CNI_PLUGINS)]
    for path in needed:
        if not os.access(path, os.X_OK):
            raise NodeUnavailable(f"the real node needs {path}, which is missing: run `make node`")
    require_cgroup_v1_memory()
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise NodeUnavailable(
            "the real node needs the overlay filesystem, which this kernel does not offer "
            "(containerd's overlayfs snapshotter unpacks images with it)"
        )


@dataclass
class RealNode:
    """With `cluster=None` only containerd runs (for `ctr run` of an image without a
    cluster); everything else is the same, lock and clean-up included."""

    cluster: LocalCluster | None
    name: str = "audiojob-realnode"
    network: PodNetwork = field(default_factory=PodNetwork)
    startup_timeout: float = 180.0
    lock_timeout: float = 600.0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Each daemon's command line, so a fault test can start it again as it was.
    argv: dict[str, list[str]] = field(default_factory=dict)
    _kubelet: Kubelet | None = None
    _locked: bool = False

    @property
    def cgroups(self) -> CgroupTree:
        return CgroupTree()

    @property
    def containerd(self) -> Containerd:
        _, ref = pause_archive(bin_dir() / "pause", IMAGES)
        return Containerd(
            root=CACHE / "containerd",
            state=RUNTIME_STATE,
            cni_bin=bin_dir() / "cni",
            cni_conf=WORK / "net.d",
            sandbox_image=ref,
        )

    @property
    def pause_image(self) -> str:
        return self.containerd.sandbox_image

    def placement(self) -> dict[str, Any]:
        """Pod spec fields that put a pod on this node (and only there)."""
        return {
            "nodeSelector": {"kubernetes.io/hostname": self.name},
            "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        }

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> RealNode:
        preflight(kubelet=self.cluster is not None)
        if _ACTIVE:
            # The lock is per open file: waiting for it here would wait for ourselves.
            raise RuntimeError(
                "this process already runs a real node (or its containerd alone): stop that "
                "one first, only one can run on a machine"
            )
        MACHINE.acquire(self.lock_timeout)
        self._locked = True
        try:
            clean_up_after_crash()
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        WORK.mkdir(parents=True)
        (WORK / "logs").mkdir()
        # Recorded before anything changes, so a crash at any later point can be undone.
        HostState.capture().save(WORK / "hoststate.json")
        self._save_pids()
        self.cgroups.create("host", "pods")
        ctrd = self.containerd
        (WORK / "net.d").mkdir()
        (WORK / "net.d" / "10-audiojob.conflist").write_text(self.network.conflist(WORK / "ipam"))
        (WORK / "containerd.toml").write_text(ctrd.config())
        RUNTIME_STATE.mkdir(parents=True, exist_ok=True)
        self._spawn("containerd", ctrd.argv(WORK / "containerd.toml"))
        self._wait(lambda: ctrd.ctr("version", timeout=5).returncode == 0, "containerd")
        # Containers a crashed run left in containerd's (persistent) metadata would come back
        # as pods' ghosts; images stay.
        if errors := ctrd.remove_workloads():
            raise RuntimeError("; ".join(errors))
        self.import_images(pause_archive(bin_dir() / "pause", IMAGES)[0], *app_images())
        _ACTIVE.append(self)
        if self.cluster is not None:
            self._start_kubelet(self.cluster, ctrd)

    def _start_kubelet(self, cluster: LocalCluster, ctrd: Containerd) -> None:
        self.network.up(apiserver_port=cluster.ports["apiserver"])
        kubelet = Kubelet(
            node_name=self.name,
            work_dir=WORK,
            node_ip=self.network.gateway,
            port=free_port(),
            healthz_port=free_port(),
            cgroup_root=f"/{self.cgroups.name}/pods",
            runtime_endpoint=ctrd.endpoint,
        )
        config = kubelet.write_files(cluster_pki=cluster.pki, server=cluster.server)
        self._kubelet = kubelet
        self._spawn("kubelet", kubelet.argv(bin_dir() / "kubelet", config))
        core = kubernetes.client.CoreV1Api(cluster.api_client())
        self._wait(lambda: self._ready(core), f"node {self.name} Ready")

    # -- faults (tests/realnode/test_chaos.py) -----------------------------------
    def kill_daemon(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Stop the kubelet or containerd alone, as a crash (SIGKILL) or a service stop
        (SIGTERM) would. The pods keep running: each shim has its own process group."""
        proc = self.procs.pop(name)
        os.kill(proc.pid, sig)
        proc.wait(60)
        self._save_pids()

    def revive_daemon(self, name: str) -> None:
        """Start a daemon `kill_daemon` stopped, with its first command line (same sockets,
        ports and state); returns once it serves again."""
        if name == "kubelet":
            self._revive_kubelet()
            return
        self._spawn(name, self.argv[name])
        ctrd = self.containerd
        self._wait(lambda: ctrd.ctr("version", timeout=5).returncode == 0, "containerd")

    def _revive_kubelet(self) -> None:
        """A kubelet exits at once while a restarted containerd's CRI plugin still recovers its
        state ("server is not initialized yet"), and only a CRI call can tell when that is
        done: such a kubelet is started again."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            self._spawn("kubelet", self.argv["kubelet"])
            try:
                return self._wait_kubelet()
            except RuntimeError as e:
                if "not initialized yet" not in str(e) or time.monotonic() > deadline:
                    raise
                self.procs.pop("kubelet")
                time.sleep(1)

    def _wait_kubelet(self) -> None:
        assert self.cluster is not None and self._kubelet is not None
        healthz = f"http://127.0.0.1:{self._kubelet.healthz_port}/healthz"
        core = kubernetes.client.CoreV1Api(self.cluster.api_client())

        def serving() -> bool:
            with urllib.request.urlopen(healthz, timeout=2) as r:
                return r.status == 200 and self._ready(core)

        self._wait(serving, f"the kubelet of {self.name} healthy and the node Ready")

    def stop(self) -> None:
        """Stop everything the node started and put the host back; raises RuntimeError listing
        what could not be cleaned up."""
        if not self._locked:
            return  # never started (or already stopped): whatever runs is not ours to stop
        errors: list[str] = []
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if self.procs.get("kubelet") and self.procs["kubelet"].poll() is None:
            errors += self._drain()
        errors += tear_down(pids={n: p.pid for n, p in self.procs.items()}, ctrd=self.containerd)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self.procs.clear()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                kubernetes.client.CoreV1Api(self.cluster.api_client()).delete_node(self.name)
        self._locked = False
        MACHINE.release()
        if errors:
            raise RuntimeError("the real node did not stop cleanly: " + "; ".join(errors))

    def import_images(self, *archives: Path) -> None:
        """Import image archives into the node's containerd unless this very archive (by its
        content key) was imported before and its images are still there."""
        ctrd = self.containerd
        have = ctrd.images()
        marks = ctrd.root / "imported"
        marks.mkdir(parents=True, exist_ok=True)
        for archive in dict.fromkeys(archives):
            mark, key = marks / archive.name, content_key(archive)
            names = archive_refs(archive)
            if names and names <= have and mark.exists() and mark.read_text() == key:
                continue
            ctrd.import_archive(archive)
            mark.write_text(key)
            ctrd.prune_replaced_images()

    # -- internals --------------------------------------------------------------
    def _drain(self) -> list[str]:
        """Delete the node's pods so the kubelet stops their containers and tears down their
        network itself; whatever it has not finished in time is killed afterwards."""
        if self.cluster is None:
            return []
        with contextlib.suppress(Exception):
            self.cluster.kubectl(
                "delete", "pods", "--all-namespaces", "--field-selector",
                f"spec.nodeName={self.name}", "--grace-period=0", "--force", "--wait=false",
            )  # fmt: skip
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.containerd.ctr("tasks", "ls", "-q").stdout:
                time.sleep(0.5)
        return []

    def _ready(self, core: kubernetes.client.CoreV1Api) -> bool:
        status = core.read_node(self.name).status
        conditions = (status.conditions if status else None) or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    def log(self, name: str) -> Path:
        """Where a daemon's output goes: beside the cluster's logs, or in the node's work
        directory (removed on stop) when there is no cluster."""
        return self.cluster.log(name) if self.cluster else WORK / "logs" / f"{name}.log"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.log(name).open("ab")
        host_procs = [p / "host" / "cgroup.procs" for p in self.cgroups.paths()]

        def join_cgroup() -> None:
            # Before exec, so the daemon and every shim it forks are in the node's tree.
            for procs in host_procs:
                procs.write_text(str(os.getpid()))

        self.argv[name] = argv
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=join_cgroup,  # noqa: PLW1509 -- writes two files, no locks taken
        )
        self._save_pids()

    def _save_pids(self) -> None:
        pids = {n: p.pid for n, p in self.procs.items()}
        (WORK / "pids.json").write_text(json.dumps(pids))

    def _wait(self, predicate: Callable[[], object], what: str) -> None:
        wait_while_running(
            predicate, what, procs=self.procs, log=self.log, timeout=self.startup_timeout
        )

    def abandon(self) -> None:
        """Forget the node without stopping anything, as a crash of this process would: its
        processes, mounts and chains stay, for the next start to clean up."""
        _ACTIVE.remove(self)
        self.procs.clear()
        self._locked = False
        MACHINE.release()


# The nodes this process runs (at most one: the lock), for `containerd_running`.
_ACTIVE: list[RealNode] = []


@contextlib.contextmanager
def containerd_running() -> Iterator[Containerd]:
    """The real node's containerd: this process's running node's, or one started (and stopped
    afterwards) on its own, without a kubelet."""
    if _ACTIVE:
        yield _ACTIVE[0].containerd
        return
    node = RealNode(cluster=None).start()
    try:
        yield node.containerd
    finally:
        node.stop()


def app_images() -> list[Path]:
    """Image archives `make image` left for the node (devcluster/image.py)."""
    return sorted(IMAGES.glob("*.tar")) if IMAGES.is_dir() else []


def clean_up_after_crash() -> None:
    """A previous node whose process died without stopping it left WORK behind: undo it."""
    if WORK.exists():
        pids = json.loads((WORK / "pids.json").read_text()) if (WORK / "pids.json").exists() else {}
        errors = tear_down(pids=pids, ctrd=None)
        if errors:
            raise RuntimeError("could not clean up after a crashed real node: " + "; ".join(errors))


def tear_down(*, pids: dict[str, int], ctrd: Containerd | None) -> list[str]:
    """Everything after the graceful part of stopping, shared with the crash clean-up: kill
    by PID, then by cgroup, unmount, remove the bridge, restore the host state. `ctrd` is the
    containerd to empty first while it still runs (None after a crash)."""
    errors: list[str] = []
    tree = CgroupTree()
    # A PID recorded by a crashed run may have been reused since: only ours are in the tree.
    ours = tree.pids()
    pids = {n: p for n, p in pids.items() if p in ours}
    if "kubelet" in pids:
        errors += [f"{n} survived SIGKILL" for n in kill_pids({"kubelet": pids.pop("kubelet")})]
    if ctrd is not None and "containerd" in pids:
        errors += ctrd.remove_workloads()
    errors += [f"{n} survived SIGKILL" for n in kill_pids(pids)]
    errors += tree.kill_all()
    errors += unmount_all(RUNTIME_STATE)
    errors += unmount_all(WORK)
    errors += tree.remove()
    errors += PodNetwork().down()
    if (WORK / "hoststate.json").exists():
        errors += HostState.load(WORK / "hoststate.json").restore()
    errors += remove_tree(RUNTIME_STATE)
    with contextlib.suppress(OSError):
        RUNTIME_STATE.parent.rmdir()  # shared with the image build's state: only when empty
    if not errors:
        errors += remove_tree(WORK)
    return errors


def leftovers() -> list[str]:
    """What a stopped node would have left behind on this machine (empty when clean): its
    processes, mounts, cgroups, bridge and directories. Host state it restores (sysctls,
    iptables, directories elsewhere) is compared with a HostState by the caller."""
    found: list[str] = []
    marks = (str(WORK), str(RUNTIME_STATE))
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if any(m in cmdline for m in marks):
                found.append(f"process {proc.name} is still running: {cmdline[:200]}")
    for prefix in (WORK, RUNTIME_STATE):
        found += [f"{m} is still mounted" for m in mounts_under(prefix)]
        if prefix.exists():
            found.append(f"{prefix} still exists")
    if CgroupTree().exists():
        found.append(f"cgroup {CgroupTree().name} still exists")
    if PodNetwork().exists():
        found.append(f"bridge {PodNetwork().bridge} still exists")
    return found
