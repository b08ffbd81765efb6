"""The release as a user meets it, on the real node: `make release`'s work pushes two versions
to a real OCI registry (CNCF distribution, on loopback); `helm install oci://…` of the first
with `image.repository` at that registry, and the node's containerd pulls the image from it
(nothing preloaded: the registry's log shows every layer fetched); real audio jobs complete;
`helm upgrade` to the second while 10 jobs are in flight loses none and runs none twice;
`helm rollback` brings the first back; `helm uninstall` with jobs in flight leaves nothing of
the installation in the cluster."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from controller.settings import DbSettings
from controller.store import JobStore
from devcluster.controlplane import LocalCluster
from devcluster.hrana_server import HranaServer, running_server
from devcluster.image import ROOT, chart_version
from devcluster.node import RealNode
from devcluster.node.realnode import app_images
from devcluster.registry import Registry, running_registry
from devcluster.release import IMAGE_REPOSITORY, Release, run
from tests.chart.test_chart import helm
from tests.e2e.runs import Runs
from tests.helpers import wait_for
from tests.image.test_release import tree_with_chart_versions
from tests.realnode.conftest import OutputVolume, real_chart_values, tone_url
from tests.runner.conftest import MediaServer

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.realnode,
    pytest.mark.slow,
    pytest.mark.timeout(30 * 60),
]
V1 = chart_version(ROOT)
_major, _minor, _patch = (int(p) for p in V1.split("-")[0].split(".")[:3])
V2 = f"{_major}.{_minor}.{_patch + 1}"
TERMINAL = ("complete", "failed", "cancelled")


@pytest.fixture
def registry(realnode: RealNode, tmp_path: Path) -> Iterator[Registry]:
    """A registry the node pulls from over plain HTTP, and a node with nothing of the image:
    the archive `make image` preloads shares its base layers with the pushed image, so it
    is removed (and imported again after), as are images pulled by an earlier run."""
    with running_registry(tmp_path / "registry") as reg:
        realnode.containerd.allow_plain_http(reg.host)
        forget_images(realnode)
        try:
            yield reg
        finally:
            forget_images(realnode)
            realnode.import_images(*app_images())


def forget_images(node: RealNode) -> None:
    """Every name of our images, including the `sha256:<id>` one the CRI plugin adds, once no
    container of an earlier test's pods uses them: a container keeps its image's unpacked
    layers, and containerd then skips fetching a layer whose unpacked snapshot exists, so the
    install below would pull nothing (seen once, right after other real-node tests)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and any(
        "audiojob-operator" in line
        for line in node.containerd.ctr("containers", "ls").stdout.splitlines()[1:]
    ):
        time.sleep(2)
    listed = [line.split() for line in node.containerd.ctr("images", "ls").stdout.splitlines()[1:]]
    targets = {w[2] for w in listed if len(w) > 2 and "audiojob-operator" in w[0]}
    if ours := [w[0] for w in listed if len(w) > 2 and w[2] in targets]:
        # --sync: containerd's garbage collector drops the blobs before the call returns.
        node.containerd.ctr("images", "rm", "--sync", *ours, timeout=300)


@pytest.fixture
def database(realnode: RealNode, tmp_path: Path) -> Iterator[HranaServer]:
    with running_server(str(tmp_path / "jobs.db"), host=realnode.network.gateway) as server:
        yield server


def test_release_install_upgrade_rollback_uninstall(
    *,
    cluster: LocalCluster,
    realnode: RealNode,
    namespace: str,
    registry: Registry,
    database: HranaServer,
    node_media_server: MediaServer,
    long_source: str,
    output_volume: OutputVolume,
    tmp_path: Path,
) -> None:
    api = cluster.api_client()
    core = kubernetes.client.CoreV1Api(api)
    t0 = time.monotonic()
    digest_v1 = run(Release(V1, registry.host, plain_http=True, root=ROOT))
    t_v1 = time.monotonic() - t0
    root_v2 = tree_with_chart_versions(tmp_path / "v2", V2, V2)
    digest_v2 = run(Release(V2, registry.host, plain_http=True, root=root_v2))
    t_v2 = time.monotonic() - t0 - t_v1
    assert digest_v1 != digest_v2  # the version is in the image (its config), so it differs
    assert registry.tags(IMAGE_REPOSITORY) == sorted([V1, V2])
    assert registry.tags("charts/audiojob-operator") == sorted([V1, V2])

    # -- install from the registry: the node pulls every layer -----------------------------
    layers = [str(layer["digest"]) for layer in manifest_layers(registry, digest_v1)]
    already = set(layers) & content_digests(realnode)
    assert not already, f"layers on the node before the pull: {sorted(already)}"
    values = real_chart_values(realnode, database_url=database.url("libsql"),
                               claim=output_volume.claim)  # fmt: skip
    values["image"] = {"repository": f"{registry.host}/{IMAGE_REPOSITORY}",
                       "pullPolicy": "IfNotPresent"}  # fmt: skip
    # Ten ingests at once must fit the 2-core node's allocatable CPU.
    values["runner"]["resources"] = {"ingest": {"requests": {"cpu": "50m", "memory": "64Mi"}}}
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    where = [f"--namespace={namespace}", f"--kubeconfig={cluster.kubeconfig}", "--plain-http"]
    chart = f"oci://{registry.host}/charts/audiojob-operator"
    t = time.monotonic()
    helm("install", "real", chart, f"--version={V1}", f"--values={values_file}", *where,
         "--wait", "--timeout=5m")  # fmt: skip
    t_install = time.monotonic() - t
    assert controller_image_digest(core, namespace) == digest_v1
    fetched = {p.rsplit("/", 1)[1] for m, p, s in registry.requests()
               if m == "GET" and "/blobs/" in p and s == 200}  # fmt: skip
    assert set(layers) <= fetched, "containerd did not fetch every layer from the registry"

    db = DbSettings(url=database.url("libsql"))
    tone = tone_url(node_media_server, tmp_path, seconds=3)
    asyncio.run(insert(db, [("short-1", tone), ("short-2", tone)]))
    assert_completed(db, ["short-1", "short-2"])

    # -- upgrade while 10 jobs are in flight ------------------------------------------------
    batch = [f"upgrade-{i}" for i in range(10)]
    with Runs(api, namespace) as runs:
        asyncio.run(insert(db, [(job, long_source) for job in batch]))
        wait_for(lambda: all(runs.pods.get(job) for job in batch), timeout=300, interval=1,
                 message="all 10 jobs' pods started")  # fmt: skip
        unfinished = [r for r in asyncio.run(get(db, batch)) if r.status not in TERMINAL]
        t = time.monotonic()
        helm("upgrade", "real", chart, f"--version={V2}", f"--values={values_file}", *where,
             "--wait", "--timeout=5m")  # fmt: skip
        t_upgrade = time.monotonic() - t
        assert controller_image_digest(core, namespace) == digest_v2
        assert_completed(db, batch)
        assert {job: len(runs.jobs[job]) for job in batch} == dict.fromkeys(batch, 1)
        assert {job: len(runs.pods[job]) for job in batch} == dict.fromkeys(batch, 1)
    assert len(unfinished) >= 5, "the upgrade did not happen with jobs in flight"
    assert attempts(database, batch) == dict.fromkeys(batch, 1)

    # -- rollback ------------------------------------------------------------------------------
    helm("rollback", "real", "1", f"--namespace={namespace}", f"--kubeconfig={cluster.kubeconfig}",
         "--wait", "--timeout=5m")  # fmt: skip
    assert controller_image_digest(core, namespace) == digest_v1
    asyncio.run(insert(db, [("after-rollback", tone)]))
    assert_completed(db, ["after-rollback"])

    # -- uninstall with jobs in flight ----------------------------------------------------------
    leaving = ["leaving-1", "leaving-2"]
    with Runs(api, namespace) as runs:
        asyncio.run(insert(db, [(job, long_source) for job in leaving]))
        wait_for(lambda: all(runs.pods.get(job) for job in leaving), timeout=300, interval=1,
                 message="the last jobs' pods started")  # fmt: skip
    t = time.monotonic()
    helm("uninstall", "real", f"--namespace={namespace}", f"--kubeconfig={cluster.kubeconfig}",
         "--wait", "--timeout=5m")  # fmt: skip
    t_uninstall = time.monotonic() - t
    assert left_in_cluster(api, namespace, keep={output_volume.claim}) == {}
    print(
        f"release: {V1} in {t_v1:.0f}s, {V2} in {t_v2:.0f}s; install (pull) {t_install:.0f}s, "
        f"upgrade under 10 in flight {t_upgrade:.0f}s ({len(unfinished)} unfinished at the "
        f"upgrade), uninstall {t_uninstall:.0f}s"
    )


def manifest_layers(registry: Registry, digest: str) -> list[dict[str, Any]]:
    manifest = registry.manifest(IMAGE_REPOSITORY, digest)
    layers = manifest.get("layers")
    assert isinstance(layers, list) and layers, manifest
    return layers


def content_digests(node: RealNode) -> set[str]:
    lines = node.containerd.ctr("content", "ls", "-q").stdout.split()
    return set(lines)


def controller_image_digest(core: kubernetes.client.CoreV1Api, namespace: str) -> str:
    """The digest the running controller pod's image was pulled by (the only one running)."""

    def running() -> str | None:
        pods = core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=controller"
        ).items
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        if len(live) != 1 or live[0].status.phase != "Running":
            return None
        image_id = live[0].status.container_statuses[0].image_id or ""
        return image_id.rsplit("@", 1)[-1] if "@" in image_id else None

    found = wait_for(running, timeout=300, interval=1, message="one controller pod running")
    assert isinstance(found, str)
    return found


async def insert(db: DbSettings, jobs: list[tuple[str, str]]) -> None:
    async with await JobStore.open(db) as store:
        for job_id, url in jobs:
            await store.insert(job_id=job_id, type="ingest", payload={"url": url})


async def get(db: DbSettings, ids: list[str]) -> list[Any]:
    async with await JobStore.open(db) as store:
        return [await store.get(job_id) for job_id in ids]


def assert_completed(db: DbSettings, ids: list[str]) -> None:
    def finished() -> list[Any] | None:
        rows = asyncio.run(get(db, ids))
        return rows if all(r is not None and r.status in TERMINAL for r in rows) else None

    rows = wait_for(finished, timeout=600, interval=1, message=f"rows {ids} finished")
    assert [(r.job_id, r.status, r.attempt) for r in rows] == [(i, "complete", 1) for i in ids], [
        (r.job_id, r.status, r.attempt, r.error) for r in rows
    ]


def attempts(database: HranaServer, ids: list[str]) -> dict[str, int]:
    """Ledger lines per job: one per attempt that ever started."""
    with sqlite3.connect(f"file:{database.db_path}?mode=ro", uri=True) as conn:
        marks = ",".join("?" * len(ids))
        found = conn.execute(
            f"SELECT job_id, count(*) FROM audio_job_attempts WHERE job_id IN ({marks})"
            " GROUP BY job_id",
            ids,
        ).fetchall()
    return {str(job): int(n) for job, n in found}


def left_in_cluster(
    api: kubernetes.client.ApiClient, namespace: str, *, keep: set[str]
) -> dict[str, list[str]]:
    """Everything of the installation still there: namespaced kinds in `namespace` (bar what
    Kubernetes itself puts in every namespace, and the test's own claim) and the chart's
    cluster-scoped admission policy."""
    core = kubernetes.client.CoreV1Api(api)
    listings: dict[str, Any] = {
        "jobs": kubernetes.client.BatchV1Api(api).list_namespaced_job,
        "pods": core.list_namespaced_pod,
        "leases": kubernetes.client.CoordinationV1Api(api).list_namespaced_lease,
        "secrets": core.list_namespaced_secret,
        "configmaps": core.list_namespaced_config_map,
        "serviceaccounts": core.list_namespaced_service_account,
        "services": core.list_namespaced_service,
        "pvcs": core.list_namespaced_persistent_volume_claim,
        "roles": kubernetes.client.RbacAuthorizationV1Api(api).list_namespaced_role,
        "rolebindings": kubernetes.client.RbacAuthorizationV1Api(api).list_namespaced_role_binding,
        "networkpolicies": kubernetes.client.NetworkingV1Api(api).list_namespaced_network_policy,
        "deployments": kubernetes.client.AppsV1Api(api).list_namespaced_deployment,
    }
    builtin = {"kube-root-ca.crt", "default", *keep}
    left: dict[str, list[str]] = {}

    def look() -> bool:
        left.clear()
        for kind, list_fn in listings.items():
            names = [i.metadata.name for i in list_fn(namespace).items]
            if extra := [n for n in names if n not in builtin]:
                left[kind] = extra
        admission = kubernetes.client.AdmissionregistrationV1Api(api)
        policies = {
            "validatingadmissionpolicies": admission.list_validating_admission_policy,
            "validatingadmissionpolicybindings": admission.list_validating_admission_policy_binding,
        }
        for kind, list_fn in policies.items():
            names = [i.metadata.name for i in list_fn().items]
            if mine := [n for n in names if n.startswith("real-")]:
                left[kind] = mine
        return not left

    # Pods of deleted Jobs get their grace period; the hook waited for them, so this is brief.
    with_grace = time.monotonic() + 30
    while not look() and time.monotonic() < with_grace:
        time.sleep(1)
    return dict(left)
