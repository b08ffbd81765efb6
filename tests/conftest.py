"""Fixtures shared by every tier. Cluster fixtures start the real local control plane once
per session (devcluster/controlplane.py) and give each test a fresh namespace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from devcluster.controlplane import LocalCluster
from devcluster.node import NodeUnavailable, RealNode


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as c:
        yield c


@pytest.fixture
def realnode(cluster: LocalCluster) -> RealNode:
    """The session cluster's real node (containerd + kubelet), started on first use and
    stopped with the cluster. A machine that cannot run it fails the test with the sentence
    saying why: the real-node tier never skips."""
    try:
        return cluster.start_real_node()
    except NodeUnavailable as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def api(cluster: LocalCluster) -> Iterator[kubernetes.client.ApiClient]:
    client = cluster.api_client()
    yield client
    client.close()


@pytest.fixture
def core_v1(api: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


@pytest.fixture
def batch_v1(api: kubernetes.client.ApiClient) -> kubernetes.client.BatchV1Api:
    return kubernetes.client.BatchV1Api(api)


@pytest.fixture
def namespace(cluster: LocalCluster, api: kubernetes.client.ApiClient) -> Iterator[str]:
    """A fresh namespace whose `default` ServiceAccount exists; deleted after the test."""
    from tests.helpers import wait_for

    core = kubernetes.client.CoreV1Api(api)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for(
        lambda: core.read_namespaced_service_account("default", name),
        timeout=90,
        message=f"default ServiceAccount in {name}",
    )
    yield name
    try:
        core.delete_namespace(name, propagation_policy="Background", grace_period_seconds=0)
    except kubernetes.client.ApiException as e:
        if e.status != 404:
            raise


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Any test that asks for the control plane is a cluster test, marked or not; one that asks
    # for the real node is also a realnode test.
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if {"cluster", "namespace", "api", "realnode"} & fixtures:
            item.add_marker(pytest.mark.cluster)
        if "realnode" in fixtures:
            item.add_marker(pytest.mark.realnode)
