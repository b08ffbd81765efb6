"""Pure, keyword-only manifest builders: no I/O, no globals."""

from __future__ import annotations

from typing import Any

from controller.names import job_key, job_name
from controller.settings import Settings
from runner import contract as c


def job_labels(*, job_id: str, job_type: str, attempt: int) -> dict[str, str]:
    return {
        c.LABEL_NAME: c.LABEL_NAME_VALUE,
        c.LABEL_MANAGED_BY: c.LABEL_MANAGED_BY_VALUE,
        c.LABEL_TYPE: job_type if job_type.isidentifier() and len(job_type) <= 63 else "unknown",
        c.LABEL_ATTEMPT: str(attempt),
        c.LABEL_JOB_KEY: job_key(job_id),
    }


MANAGED_SELECTOR = f"{c.LABEL_MANAGED_BY}={c.LABEL_MANAGED_BY_VALUE}"


def build_job(
    *,
    job_id: str,
    job_type: str,
    attempt: int,
    trace_id: str,
    payload_json: str,
    settings: Settings,
) -> dict[str, Any]:
    """The batch/v1 Job for one attempt of one row."""
    labels = job_labels(job_id=job_id, job_type=job_type, attempt=attempt)
    annotations = {c.ANN_JOB_ID: job_id, c.ANN_TRACE_ID: trace_id}
    runner = settings.runner
    env: list[dict[str, Any]] = [
        {"name": c.ENV_ID, "value": job_id},
        {"name": c.ENV_TYPE, "value": job_type},
        {"name": c.ENV_ATTEMPT, "value": str(attempt)},
        {"name": c.ENV_TRACE_ID, "value": trace_id},
        {"name": c.ENV_PAYLOAD, "value": payload_json},
        {"name": c.ENV_OUTPUT, "value": runner.output},
        # The runner cannot read its pod's grace period; it needs it to time SIGKILL.
        {"name": "AUDIOJOB_GRACE_SECONDS", "value": str(settings.timeouts.cancel_grace_seconds)},
        # The address rules the controller applied at claim; the runner applies them again.
        *({"name": k, "value": v} for k, v in runner.network_env().items() if v),
        {"name": c.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": c.ENV_POD_NAMESPACE,
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
    ]
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": "/tmp"}]  # noqa: S108
    if runner.output_volume_claim:
        volumes.append(
            {"name": "output", "persistentVolumeClaim": {"claimName": runner.output_volume_claim}}
        )
        mounts.append({"name": "output", "mountPath": runner.output})
    container = {
        "name": "runner",
        "image": runner.image,
        "imagePullPolicy": runner.image_pull_policy,
        "command": ["python", "-m", "runner"],
        "env": env,
        "resources": runner.resources_for(job_type).as_k8s(),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": runner.service_account,
        "terminationGracePeriodSeconds": settings.timeouts.cancel_grace_seconds,
        "containers": [container],
        "volumes": volumes,
    }
    if runner.node_selector:
        pod_spec["nodeSelector"] = dict(runner.node_selector)
    if runner.tolerations:
        pod_spec["tolerations"] = list(runner.tolerations)
    if runner.affinity:
        pod_spec["affinity"] = dict(runner.affinity)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(job_id, attempt),
            "namespace": settings.kube.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            # The controller owns retries: a failed pod is an outcome, not something to re-run.
            "backoffLimit": 0,
            # An evicted, preempted or node-lost pod is deleted soon after it fails, often
            # before the controller sees it; this rule makes the Job's own Failed condition
            # (which stays) say the pod was disrupted, so the attempt is retried, not failed.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    }
                ]
            },
            # Kubernetes enforces the run timeout even while the controller is down.
            "activeDeadlineSeconds": settings.timeouts.run_timeout(job_type),
            # No ttlSecondsAfterFinished here: it is set once the outcome is in the row, so a
            # finished Job is never collected before its result is recorded.
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": dict(runner.pod_annotations) | annotations,
                },
                "spec": pod_spec,
            },
        },
    }
