"""What the API server saw of each row's runs: every Job created and every pod that started,
recorded from watches for the whole test, so a run that came and went between two looks at
the table is still counted."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import kubernetes

JOB_ID = "audiojob.dev/job-id"


class Runs:
    """Watches Jobs and pods of one namespace in two threads until `stop`."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str) -> None:
        self.jobs: dict[str, set[str]] = defaultdict(set)
        """job id -> names of the Jobs created for it."""
        self.pods: dict[str, set[str]] = defaultdict(set)
        """job id -> names of its pods that started (Running, or finished after running)."""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        batch, core = kubernetes.client.BatchV1Api(api), kubernetes.client.CoreV1Api(api)
        self._threads = [
            threading.Thread(target=self._watch, args=(list_fn, namespace, seen))
            for list_fn, seen in (
                (batch.list_namespaced_job, self._job),
                (core.list_namespaced_pod, self._pod),
            )
        ]
        for t in self._threads:
            t.start()

    def _watch(self, list_fn: Any, namespace: str, seen: Any) -> None:
        rv = list_fn(namespace).metadata.resource_version
        while not self._stop.is_set():
            w = kubernetes.watch.Watch()
            try:
                for event in w.stream(list_fn, namespace, resource_version=rv, timeout_seconds=2):
                    obj = event["object"]
                    rv = obj.metadata.resource_version
                    with self._lock:
                        seen(obj)
                    if self._stop.is_set():
                        break
            except kubernetes.client.ApiException as e:
                if e.status != 410:
                    raise
                rv = list_fn(namespace).metadata.resource_version  # a test never compacts

    def _job(self, job: Any) -> None:
        if JOB_ID in (job.metadata.annotations or {}):
            self.jobs[job.metadata.annotations[JOB_ID]].add(job.metadata.name)

    def _pod(self, pod: Any) -> None:
        annotations = pod.metadata.annotations or {}
        statuses = pod.status.container_statuses or []
        started = pod.status.phase == "Running" or any(
            s.state.terminated is not None and s.state.terminated.started_at for s in statuses
        )
        if JOB_ID in annotations and started:
            self.pods[annotations[JOB_ID]].add(pod.metadata.name)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def __enter__(self) -> Runs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
