"""The controller's Kubernetes client, in a pod on the real node with in-cluster credentials,
keeps working across a rotation of its projected ServiceAccount token (issue 18).

The kubelet rotates a projected token once it is older than 80 % of its lifetime, and a
lifetime is at least 10 minutes (the API server refuses a shorter `expirationSeconds`), so a
real rotation takes 8 minutes or more. This test plays the kubelet's part instead, on the same
files: the pod's /var/run/secrets/kubernetes.io/serviceaccount is a directory on this machine
that the test writes the way the kubelet's atomic writer does (a timestamped directory, `..data`
swapped to it by a rename, `token` a symlink through `..data`), with tokens the API server
issued for the ServiceAccount through TokenRequest, each bound to a Secret so that deleting the
Secret ends the token at once, where a real one would expire.

The old token stays valid for 65 s after the new one is written (the kubelet leaves at least
20 % of 10 minutes); kubernetes.aio's in-cluster loader re-reads the file once a minute, so by
then every request must carry the new token. Then the old one is revoked, and every request the
client made, before, during and after, must have succeeded. A client that read the token only
at start fails here with 401 once the old token is revoked.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from devcluster.controlplane import LocalCluster
from devcluster.image import image_name
from devcluster.node import RealNode
from tests.chart.test_chart import client_with_token
from tests.helpers import service_account_with_rules, wait_for
from tests.realnode.conftest import require_app_image

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.slow]

SA = "controller-under-test"
OLD_TOKEN_GRACE = 65  # seconds: kubernetes.aio re-reads the token file every 60 s

# Runs in the pod: the controller's own client (controller.kube.Kube, in-cluster credentials),
# one list of pods every 0.5 s, each outcome a JSON line on stdout.
CLIENT = r"""
import asyncio, json, sys, time
from controller.kube import Kube

async def main():
    kube = await Kube.connect(sys.argv[1])
    while True:
        t = time.time()
        try:
            pods = [p async for page, _ in kube.list_pods() for p in page]
            line = {"t": t, "ok": True, "pods": len(pods)}
        except Exception as e:
            line = {"t": t, "ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
        print(json.dumps(line), flush=True)
        await asyncio.sleep(0.5)

asyncio.run(main())
"""


def project(directory: Path, files: dict[str, str]) -> None:
    """Write `files` into `directory` as the kubelet's atomic writer does: a new timestamped
    directory, `..data` swapped to it by one rename, each file a symlink through `..data`."""
    stamp = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{uuid.uuid4().hex[:8]}"
    stamp.mkdir(mode=0o755)
    for name, content in files.items():
        (stamp / name).write_text(content)
        (stamp / name).chmod(0o644)
    old = (directory / "..data").resolve() if (directory / "..data").exists() else None
    tmp = directory / "..data_tmp"
    tmp.symlink_to(stamp.name)
    os.rename(tmp, directory / "..data")
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    if old is not None:
        shutil.rmtree(old)


def bound_token(core: kubernetes.client.CoreV1Api, namespace: str, secret: str) -> str:
    """A token for SA from the API server, valid until `secret` is deleted (or 10 minutes)."""
    made = core.create_namespaced_secret(namespace, {"metadata": {"name": secret}})
    request = {
        "spec": {
            "expirationSeconds": 600,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Secret",
                "name": secret,
                "uid": made.metadata.uid,
            },
        }
    }
    return str(core.create_namespaced_service_account_token(SA, namespace, request).status.token)


def client_pod(node: RealNode, namespace: str, token_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {
            **node.placement(),
            "serviceAccountName": SA,
            "automountServiceAccountToken": False,  # the test's directory stands in for it
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "client",
                    "image": image_name(),
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", CLIENT, namespace],
                    "volumeMounts": [
                        {
                            "name": "token",
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                            "readOnly": True,
                        }
                    ],
                }
            ],
            "volumes": [
                {"name": "token", "hostPath": {"path": str(token_dir), "type": "Directory"}}
            ],
        },
    }


def refused(cluster: LocalCluster, token: str, namespace: str) -> bool:
    with client_with_token(cluster, token) as api:
        try:
            kubernetes.client.CoreV1Api(api).list_namespaced_pod(namespace)
        except kubernetes.client.ApiException as e:
            return e.status == 401
    return False


def test_the_controller_client_keeps_working_across_a_token_rotation(
    cluster: LocalCluster,
    realnode: RealNode,
    namespace: str,
    core_v1: kubernetes.client.CoreV1Api,
    tmp_path: Path,
) -> None:
    require_app_image(realnode)
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    service_account_with_rules(core_v1.api_client, namespace, SA, rules)
    token_dir = tmp_path / "serviceaccount"
    token_dir.mkdir(mode=0o755)
    ca = Path(cluster.ca_file).read_text()
    old = bound_token(core_v1, namespace, "token-old")
    project(token_dir, {"token": old, "ca.crt": ca, "namespace": namespace})
    core_v1.create_namespaced_pod(namespace, client_pod(realnode, namespace, token_dir))

    def lines() -> list[dict[str, Any]]:
        text = core_v1.read_namespaced_pod_log("client", namespace)
        return [json.loads(x) for x in text.splitlines() if x.startswith("{")]

    wait_for(lambda: any(x["ok"] for x in lines()), timeout=120, message="the client's first list")

    new = bound_token(core_v1, namespace, "token-new")
    project(token_dir, {"token": new, "ca.crt": ca, "namespace": namespace})
    rotated = time.time()
    time.sleep(OLD_TOKEN_GRACE)
    core_v1.delete_namespaced_secret("token-old", namespace)
    # The API server caches a token's verdict for a few seconds: wait for it to say 401.
    wait_for(lambda: refused(cluster, old, namespace), timeout=60, message="the old token refused")
    revoked = time.time()
    assert not refused(cluster, new, namespace)
    wait_for(
        lambda: sum(x["t"] > revoked + 1 for x in lines()) >= 5,
        timeout=30,
        message="five more lists after the old token was revoked",
    )

    seen = lines()
    failures = [x for x in seen if not x["ok"]]
    assert not failures, failures[:5]
    assert sum(x["t"] < rotated for x in seen) >= 1
    assert sum(rotated < x["t"] < revoked for x in seen) >= 50  # 0.5 s apart for over a minute
    assert sum(x["t"] > revoked for x in seen) >= 5
