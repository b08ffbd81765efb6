"""Kubernetes faults the controller's client (controller.kube on kubernetes.aio) and its watches
must ride out, against the real local API server: a 429 whose Retry-After is honoured and a
watch answered 504 "Too large resource version" (through a proxy that answers them on demand,
the latter with the API server's own Status for it), and a client certificate rotated on disk
while the client runs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import kubernetes
import pytest

from controller.engine.view import View
from controller.kube import Kube, KubeError
from controller.watch import Watcher
from devcluster.controlplane import LocalCluster
from devcluster.pki import sign_cert, write_kubeconfig
from tests.faultproxy import Fault, FaultProxy
from tests.helpers import async_wait_for


def job(name: str) -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
            },
        },
    }


async def test_a_429_is_sent_again_after_its_retry_after(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    with FaultProxy(cluster) as proxy:
        proxy.add(
            Fault(
                match=lambda method, path: method == "POST" and path.endswith("/jobs"),
                status=429,
                headers={"Retry-After": "2"},
            )
        )
        kube = await Kube.connect(namespace, config_file=proxy.kubeconfig(tmp_path / "kc"))
        try:
            assert await kube.create_job(job("aj-throttled")) is True
        finally:
            await kube.close()
        first, second = proxy.requests("POST", "/jobs")
        assert (first.status, second.status) == (429, 201)
        assert second.mono - first.mono >= 2, "sent again before its Retry-After"


def too_large(api: kubernetes.client.ApiClient, namespace: str) -> bytes:
    """What the API server answers for a version it has not reached yet (as after an etcd
    restore, or from an API server whose cache lags another's): its own 504 Status."""
    batch = kubernetes.client.BatchV1Api(api)
    listed = int(batch.list_namespaced_job(namespace).metadata.resource_version)
    with pytest.raises(kubernetes.client.ApiException) as answer:
        batch.list_namespaced_job(namespace, resource_version=str(listed + 1_000_000))
    assert answer.value.status == 504
    return str(answer.value.body).encode()


async def test_a_watch_answered_too_large_resource_version_relists(
    cluster: LocalCluster, namespace: str, api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    status = too_large(api, namespace)
    assert "Too large resource version" in json.loads(status)["message"]
    relists: list[asyncio.Task[None]] = []
    with FaultProxy(cluster) as proxy:
        proxy.add(
            Fault(
                match=lambda method, path: "/jobs?" in path and "watch=true" in path,
                status=504,
                body=status,
            )
        )
        kube = await Kube.connect(namespace, config_file=proxy.kubeconfig(tmp_path / "kc"))
        view = View()
        watcher = Watcher(
            kube=kube,
            view=view,
            on_event=view.apply,
            on_gone=lambda: relists.append(asyncio.create_task(view.relist(kube))),
        )
        await view.relist(kube)
        task = asyncio.create_task(watcher.run())
        try:

            async def relisted() -> bool:
                return watcher.gone_count == 1 and view.generation == 2

            await async_wait_for(relisted, timeout=30, message="a relist")
            # It watches on, from the new list's version: a new Job reaches the view.
            kubernetes.client.BatchV1Api(api).create_namespaced_job(namespace, managed("aj-on"))

            async def seen() -> bool:
                return view.job("aj-on") is not None

            await async_wait_for(seen, timeout=30, message="the new Job in the view")
        finally:
            task.cancel()
            await asyncio.gather(task, *relists, return_exceptions=True)
            await kube.close()
        watches = [s for s in proxy.requests("GET", "/jobs?") if "watch=true" in s.path]
        assert watches[0].status == 504 and watches[1].status == 200
        assert f"resourceVersion={view.versions['job']}" in watches[1].path


def managed(name: str) -> dict[str, object]:
    body = job(name)
    body["metadata"] = {
        "name": name,
        "labels": {"app.kubernetes.io/managed-by": "audiojob-operator"},
        "annotations": {"audiojob.dev/job-id": name},
    }
    return body


def rbac(api: kubernetes.client.ApiClient, namespace: str, user: str, verbs: list[str]) -> None:
    rbac_v1 = kubernetes.client.RbacAuthorizationV1Api(api)
    rbac_v1.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": user},
            "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": verbs}],
        },
    )
    rbac_v1.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )


def install(src: Path, dst: Path) -> None:
    """As a Secret volume's update does: a new file renamed over the old one."""
    tmp = dst.with_suffix(".new")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


async def test_a_rotated_client_certificate_is_used_after_rotation(
    cluster: LocalCluster, namespace: str, api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    # Two identities: alice may only list Jobs, bob may also create them. What the API server
    # allows is how the test tells which certificate the client presented.
    for user, verbs in (("alice", ["list"]), ("bob", ["list", "create"])):
        sign_cert(cluster.pki, user, subject=f"/CN={user}", out_dir=tmp_path / user)
        rbac(api, namespace, user, verbs)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    install(tmp_path / "alice" / "alice.crt", cert)
    install(tmp_path / "alice" / "alice.key", key)
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(
        kubeconfig, server=cluster.server, ca_file=cluster.ca_file, client_cert=(cert, key)
    )
    kube = await Kube.connect(namespace, config_file=kubeconfig)
    try:
        assert [page async for page in kube.list_jobs()], "alice lists"
        with pytest.raises(KubeError) as refused:
            await kube.create_job(job("aj-rotated"))
        assert refused.value.status == 403 and '"alice"' in str(refused.value)

        install(tmp_path / "bob" / "bob.key", key)
        install(tmp_path / "bob" / "bob.crt", cert)

        async def created() -> bool:
            return await kube.create_job(job("aj-rotated"))

        # Until the client notices the new files (it looks at most once a second).
        await async_wait_for(created, timeout=30, message="a create as bob")
    finally:
        await kube.close()
