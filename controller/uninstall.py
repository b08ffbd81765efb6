"""`python -m controller.uninstall`: the chart's post-delete hook, so `helm uninstall` leaves
nothing of the installation in the cluster.

Helm deletes what the chart rendered; the controller made the rest at run time: a Job (and
its pod) per attempt and its leader-election Lease, all in the jobs namespace and all labelled
`app.kubernetes.io/managed-by=audiojob-operator`. After helm has deleted the Deployment this
hook waits for the controller's pods to be gone (a stopping controller may still create a
Job), deletes those Jobs with their pods and the Lease, and waits until the pods are gone too.

Rows stay in the database (docs/operations.md says what stays and how to remove it). A row a
deleted pod was running stays `running` under this installation's claim until another
installation on the same database takes it over at its run deadline.

The official synchronous client is enough for a one-shot that lists and deletes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from controller.builders import MANAGED_SELECTOR

log = logging.getLogger("audiojob.uninstall")
POLL_SECONDS = 1.0


class UninstallError(Exception):
    """The hook could not finish; the message says what is left."""


def wait_until(done: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise UninstallError(f"{what} after {timeout:.0f} s")
        time.sleep(POLL_SECONDS)


def names(listed: Any) -> list[str]:
    return [item.metadata.name for item in listed.items if item.metadata and item.metadata.name]


def clean_up(
    api: kubernetes.client.ApiClient,
    *,
    jobs_namespace: str,
    controller_namespace: str,
    controller_selector: str,
    timeout: float,
) -> dict[str, int]:
    """Delete what the controller created; returns how many of each it deleted."""
    core = kubernetes.client.CoreV1Api(api)
    batch = kubernetes.client.BatchV1Api(api)
    leases = kubernetes.client.CoordinationV1Api(api)

    def controller_pods() -> int:
        pods = core.list_namespaced_pod(controller_namespace, label_selector=controller_selector)
        return len(pods.items)

    wait_until(lambda: controller_pods() == 0, timeout=timeout,
               what="the controller's pods are still there")  # fmt: skip
    jobs = names(batch.list_namespaced_job(jobs_namespace, label_selector=MANAGED_SELECTOR))
    for job in jobs:
        try:
            # Background: the Job goes now and the garbage collector deletes its pod, which
            # gets its grace period (the runner stops ffmpeg on SIGTERM).
            batch.delete_namespaced_job(job, jobs_namespace, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise
    held = names(leases.list_namespaced_lease(jobs_namespace, label_selector=MANAGED_SELECTOR))
    for lease in held:
        try:
            leases.delete_namespaced_lease(lease, jobs_namespace)
        except ApiException as e:
            if e.status != 404:
                raise

    def runner_pods() -> int:
        return len(core.list_namespaced_pod(jobs_namespace, label_selector=MANAGED_SELECTOR).items)

    wait_until(lambda: runner_pods() == 0, timeout=timeout,
               what="the job pods are still terminating")  # fmt: skip
    return {"jobs": len(jobs), "leases": len(held)}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        with kubernetes.client.ApiClient() as api:
            gone = clean_up(
                api,
                jobs_namespace=os.environ["AUDIOJOB_KUBE__NAMESPACE"],
                controller_namespace=os.environ["AUDIOJOB_UNINSTALL__CONTROLLER_NAMESPACE"],
                controller_selector=os.environ["AUDIOJOB_UNINSTALL__CONTROLLER_SELECTOR"],
                timeout=float(os.environ.get("AUDIOJOB_UNINSTALL__TIMEOUT_SECONDS", "240")),
            )
    except (UninstallError, ApiException, KeyError) as e:
        print(f"audiojob uninstall: could not clean up the installation: {e}", file=sys.stderr)
        return 1
    log.info("uninstall: deleted %(jobs)d Jobs and %(leases)d Leases", gone)
    return 0


if __name__ == "__main__":
    sys.exit(main())
