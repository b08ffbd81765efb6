"""The controller's aiohttp client (controller.kube) with in-cluster credentials, as a pod gets
them: a ServiceAccount token file, the cluster CA file and the KUBERNETES_SERVICE_* variables,
loaded by the official package. Every other test uses a kubeconfig."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import pytest
from kubernetes.config.incluster_config import InClusterConfigLoader
from prometheus_client import REGISTRY

from controller.kube import Kube, KubeError
from devcluster.controlplane import LocalCluster


def in_cluster_kube(cluster: LocalCluster, namespace: str, token: str, tmp: Path) -> Kube:
    token_file = tmp / "token"
    token_file.write_text(token)
    config = kubernetes.client.Configuration()
    InClusterConfigLoader(
        token_filename=str(token_file),
        cert_filename=str(cluster.ca_file),
        environ={
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": cluster.server.rsplit(":", 1)[1],
        },
    ).load_and_set(config)  # type: ignore[no-untyped-call]
    return Kube(kubernetes.client.ApiClient(config), namespace)


async def test_a_service_account_token_lists_and_writes_what_its_role_allows(
    cluster: LocalCluster,
    namespace: str,
    core_v1: kubernetes.client.CoreV1Api,
    tmp_path: Path,
) -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(core_v1.api_client)
    rbac.create_namespaced_role_binding(
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
