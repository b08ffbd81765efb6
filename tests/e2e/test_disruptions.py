"""Disruptions the controller did not cause: an eviction through the Eviction API, and a node
that goes away (the pod garbage collector fails and deletes its pods). Either way the pod
disappears soon after it fails, often before the controller sees it; the attempt must be
retried, not failed, and the retry must run to completion."""

from __future__ import annotations

import json
import uuid

import kubernetes
import pytest

from devcluster.controlplane import fake_node
from tests.e2e.test_controller import pod_annotations
from tests.helpers import running_pod, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def retried(rows, job_id: str):
    return wait_for(
        lambda: (r := rows.get(job_id)).attempt == 2 and r,
        timeout=150,
        interval=0.5,
        message=f"{job_id} to be retried as attempt 2",
    )


def test_an_evicted_pod_is_retried_and_the_retry_completes(controller, rows, core_v1, namespace):
    controller.start(AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(duration="8s"))
    rows.insert("ev")
    victim = running_pod(core_v1, namespace)
    core_v1.create_namespaced_pod_eviction(
        victim.metadata.name,
        namespace,
        kubernetes.client.V1Eviction(
            metadata=kubernetes.client.V1ObjectMeta(name=victim.metadata.name, namespace=namespace)
        ),
    )
    row = retried(rows, "ev")
    assert row.retry_count == 1 and row.error_kind == "transient"
    assert "disrupted" in row.error and "permanent" not in row.error
    done = rows.wait_status("ev", "complete", timeout=90)
    assert done.attempt == 2


def test_a_pod_on_a_lost_node_is_retried_and_the_retry_completes(
    controller, rows, core_v1, namespace
):
    node = f"kwok-lost-{uuid.uuid4().hex[:6]}"
    body = fake_node(node)
    body["metadata"]["labels"]["audiojob.dev/test-node"] = node
    core_v1.create_node(body)
    try:
        controller.start(
            AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(outcome="hang"),
            AUDIOJOB_RUNNER__NODE_SELECTOR=json.dumps({"audiojob.dev/test-node": node}),
            # Simulated pods send no heartbeat; the pod GC must act before this clock does.
            AUDIOJOB_TIMEOUTS__HEARTBEAT_STALE_SECONDS="600",
        )
        rows.insert("lost")
        victim = running_pod(core_v1, namespace)
        assert victim.spec.node_name == node
        core_v1.delete_node(node)
        # The pod garbage collector waits out a 40 s quarantine before it acts on a lost node.
        row = retried(rows, "lost")
        assert row.retry_count == 1 and row.error_kind == "transient"
        assert "disrupted" in row.error, row.error
        # The node comes back; the retry lands on it and runs until cancelled.
        core_v1.create_node(body)
        second = running_pod(core_v1, namespace)
        assert second.metadata.name != victim.metadata.name
        assert rows.cancel("lost")
        rows.wait_status("lost", "cancelled")
    finally:
        try:
            core_v1.delete_node(node)
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise
