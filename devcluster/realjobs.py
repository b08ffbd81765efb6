"""What real jobs on the real node need, for the demo and the real-node tests alike: the
controller's runner settings that put job pods there with the image from `make image`, and an
output volume whose files land in a directory on this machine."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devcluster.image import image_name
from devcluster.node.cgroups import CgroupTree
from runner.payloads import JOB_TYPES

if TYPE_CHECKING:
    from devcluster.controlplane import LocalCluster
    from devcluster.node import RealNode

RUNNER_UID = 10001  # the image's USER (Dockerfile)


@dataclass(frozen=True)
class OutputVolume:
    claim: str
    pv: str
    host_dir: Path


def runner_env(*, node: RealNode, claim: str, service_account: str) -> dict[str, str]:
    """The controller's settings (environment) for job pods on `node`."""
    placement = node.placement()
    return {
        "AUDIOJOB_RUNNER__IMAGE": image_name(),
        # Imported into the node's containerd by `make image`; there is no registry to pull from.
        "AUDIOJOB_RUNNER__IMAGE_PULL_POLICY": "Never",
        "AUDIOJOB_RUNNER__SERVICE_ACCOUNT": service_account,
        "AUDIOJOB_RUNNER__NODE_SELECTOR": json.dumps(placement["nodeSelector"]),
        "AUDIOJOB_RUNNER__TOLERATIONS": json.dumps(placement["tolerations"]),
        "AUDIOJOB_RUNNER__OUTPUT_VOLUME_CLAIM": claim,
        # Sources on this machine's bridge are private addresses (the runner's SSRF guard).
        "AUDIOJOB_RUNNER__ALLOWED_NETWORKS": f"{node.network.gateway}/32",
        # Two cores shared with everything else: small requests so a few pods fit.
        "AUDIOJOB_RUNNER__RESOURCES": json.dumps(
            {t: {"cpu_request": "50m", "memory_request": "64Mi"} for t in JOB_TYPES}
        ),
    }


def create_output_volume(
    cluster: LocalCluster, *, namespace: str, host_dir: Path, claim: str = "output"
) -> OutputVolume:
    """A PVC bound to a hostPath PV: what the runner writes lands in `host_dir` (created,
    owned by the runner's user). Delete `pv` when done; the claim goes with its namespace."""
    host_dir.mkdir(parents=True, exist_ok=True)
    os.chown(host_dir, RUNNER_UID, RUNNER_UID)
    pv = f"{claim}-{namespace}"
    manifest = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(host_dir), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]
    items = {"kind": "List", "apiVersion": "v1", "items": manifest}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(items))
    # Pods wait in Pending until their claim is bound; bind it before any is created.
    cluster.kubectl(
        "wait", f"--namespace={namespace}", f"pvc/{claim}",
        "--for=jsonpath={.status.phase}=Bound", "--timeout=60s",
    )  # fmt: skip
    return OutputVolume(claim=claim, pv=pv, host_dir=host_dir)


def pod_pids(uid: str) -> set[int]:
    """Host PIDs of every process in the pod (its cgroup under the node's tree)."""
    pids: set[int] = set()
    for root in CgroupTree().paths():
        for d in root.rglob(f"pod{uid}"):
            for procs in d.rglob("cgroup.procs"):
                pids |= {int(p) for p in procs.read_text().split()}
    return pids


def node_processes(comm: str, *, pids: set[int] | None = None) -> list[int]:
    """Host PIDs of processes named `comm` anywhere in the real node's cgroup tree (pods and
    the daemons alike), or only among `pids`."""
    found = []
    tree = CgroupTree().name
    candidates = (
        pids
        if pids is not None
        else (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    )
    for pid in candidates:
        proc = Path("/proc") / str(pid)
        try:
            if (proc / "comm").read_text().strip() == comm and (
                f"/{tree}/" in (proc / "cgroup").read_text()
            ):
                found.append(pid)
        except OSError:
            continue  # gone meanwhile
    return found
