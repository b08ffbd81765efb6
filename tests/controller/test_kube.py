"""The controller's client (controller.kube) with in-cluster credentials, as a pod gets them: a
ServiceAccount token file, the cluster CA file and the KUBERNETES_SERVICE_* variables, loaded
by `kubernetes.aio`. Every other test uses a kubeconfig."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import kubernetes
import pytest
from kubernetes.aio import client as aio
from kubernetes.aio.config.incluster_config import InClusterConfigLoader
from prometheus_client import REGISTRY

from controller.kube import Kube, KubeError
from devcluster.controlplane import LocalCluster
from tests.chart.test_chart import client_with_token
from tests.helpers import async_wait_for, wait_for


def in_cluster_kube(
    cluster: LocalCluster, namespace: str, token: str, tmp: Path, reread: timedelta | None = None
) -> Kube:
    token_file = tmp / "token"
    token_file.write_text(token)
    config = aio.Configuration()
    loader = InClusterConfigLoader(
        token_filename=str(token_file),
        cert_filename=str(cluster.ca_file),
        environ={
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": cluster.server.rsplit(":", 1)[1],
        },
    )
    if reread is not None:
        # The library re-reads the file every minute; the test does not wait that long.
        loader._token_refresh_period = reread
    loader.load_and_set(config)  # type: ignore[no-untyped-call]
    return Kube(aio.ApiClient(config), namespace)


def view_role(core_v1: kubernetes.client.CoreV1Api, namespace: str) -> None:
    kubernetes.client.RbacAuthorizationV1Api(core_v1.api_client).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "view"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "view",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
    )


def bound_token(core_v1: kubernetes.client.CoreV1Api, namespace: str, secret: str) -> str:
    """A token that lives as long as the Secret it is bound to, as a pod's lives with the pod."""
    made = core_v1.create_namespaced_secret(namespace, {"metadata": {"name": secret}})
    ref = {"apiVersion": "v1", "kind": "Secret", "name": secret, "uid": made.metadata.uid}
    spec = {"expirationSeconds": 600, "boundObjectRef": ref}
    answer = core_v1.create_namespaced_service_account_token("default", namespace, {"spec": spec})
    return str(answer.status.token)


async def test_a_token_file_rewritten_mid_run_is_picked_up(
    cluster: LocalCluster,
    namespace: str,
    core_v1: kubernetes.client.CoreV1Api,
    tmp_path: Path,
) -> None:
    view_role(core_v1, namespace)
    old, new = bound_token(core_v1, namespace, "old"), bound_token(core_v1, namespace, "new")
    kube = in_cluster_kube(cluster, namespace, old, tmp_path, reread=timedelta(seconds=1))
    try:
        assert [page async for page in kube.list_jobs()]
        # The kubelet's rotation: a new token renamed over the file, the old one revoked.
        (tmp_path / "token.new").write_text(new)
        os.replace(tmp_path / "token.new", tmp_path / "token")
        core_v1.delete_namespaced_secret("old", namespace)
        with client_with_token(cluster, old) as api:

            def revoked() -> bool:
                try:
                    kubernetes.client.BatchV1Api(api).list_namespaced_job(namespace)
                except kubernetes.client.ApiException as e:
                    return e.status == 401
                return False

            wait_for(revoked, timeout=30, message="the old token refused")

        async def lists() -> bool:
            return bool([page async for page in kube.list_jobs()])

        await async_wait_for(lists, timeout=30, message="a list with the new token")
    finally:
        await kube.close()


async def test_a_service_account_token_lists_and_writes_what_its_role_allows(
    cluster: LocalCluster,
    namespace: str,
    core_v1: kubernetes.client.CoreV1Api,
    tmp_path: Path,
) -> None:
    view_role(core_v1, namespace)
    token = core_v1.create_namespaced_service_account_token(
        "default", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    kube = in_cluster_kube(cluster, namespace, token, tmp_path)
    try:
        pages = [page async for page in kube.list_jobs()]
        assert pages and pages[0][0] == [] and pages[0][1], "an empty list with its version"
        # `view` cannot create: the API's 403 comes back as a KubeError a user can act on.
        with pytest.raises(KubeError) as refused:
            await kube.create_job({"metadata": {"name": "aj-x"}, "spec": {}})
        assert refused.value.status == 403 and not refused.value.transient
        # With the API's own sentence, naming who was refused what.
        assert "create Job: HTTP 403" in str(refused.value)
        assert REGISTRY.get_sample_value(
            "audiojob_api_request_errors_total", {"verb": "create", "code": "403"}
        )
        assert f"system:serviceaccount:{namespace}:default" in str(refused.value)
    finally:
        await kube.close()
