"""The few Kubernetes calls the engine makes, as plain-dict async functions.

The official client is synchronous; every call runs in a thread of this module's own pool so
kopf's event loop never blocks on the network. Answers are read as JSON (`_preload_content=
False`), never through the client's models: building a V1Job and turning it back into a dict
cost more CPU than the rest of the controller (README, "Measured"). Writes share a bound
(`AUDIOJOB_KUBE__WRITE_CONCURRENCY`), so a big claim batch creates its Jobs in parallel
without flooding the API server.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes
from kubernetes.client import ApiException

from controller.builders import MANAGED_SELECTOR
from controller.metrics import API_REQUESTS

LIST_PAGE = 250
"""Objects per page of a relist."""


class KubeError(Exception):
    """An API call failed; `transient` tells whether trying again later can help."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


def _wrap(e: Exception, what: str) -> KubeError:
    if isinstance(e, ApiException):
        transient = e.status is None or e.status >= 500 or e.status in (408, 429)
        reason = e.reason or ""
        return KubeError(
            f"{what}: HTTP {e.status} {reason}".strip(), transient=transient, status=e.status
        )
    return KubeError(f"{what}: {e}", transient=True)


class Kube:
    def __init__(
        self, api: kubernetes.client.ApiClient, namespace: str, *, write_concurrency: int = 16
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.batch = kubernetes.client.BatchV1Api(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.coordination = kubernetes.client.CoordinationV1Api(api)
        self._writes = asyncio.Semaphore(write_concurrency)
        # Writes, plus lists and the Lease, each with a thread and a pooled connection.
        self._pool = ThreadPoolExecutor(write_concurrency + 4, thread_name_prefix="audiojob-kube")

    @classmethod
    def connect(cls, namespace: str, *, write_concurrency: int = 16) -> Kube:
        config = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=config)  # type: ignore[no-untyped-call]
        config.connection_pool_maxsize = write_concurrency + 4
        api = kubernetes.client.ApiClient(config)
        return cls(api, namespace, write_concurrency=write_concurrency)

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]
        self._pool.shutdown(wait=False)

    async def _call(
        self, what: str, fn: Any, *args: Any, parse: bool = True, **kwargs: Any
    ) -> dict[str, Any]:
        """One call; the answer as JSON (an empty dict when it has no body, or `parse` is
        False because the caller needs only the status)."""
        call = functools.partial(fn, *args, _request_timeout=30, _preload_content=False, **kwargs)
        API_REQUESTS.labels(verb=what.split(" ", 1)[0]).inc()
        try:
            data = await asyncio.get_running_loop().run_in_executor(self._pool, _read, call, parse)
        except (ApiException, OSError, kubernetes.client.exceptions.OpenApiException) as e:
            raise _wrap(e, what) from None
        except Exception as e:  # urllib3 errors when the API server is away
            raise _wrap(e, what) from None
        return data

    async def _write(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        async with self._writes:
            await self._call(what, fn, *args, parse=False, **kwargs)

    async def list_jobs(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The namespace's managed Jobs, a page at a time (see `_pages`)."""
        async for page in self._pages("list Jobs", self.batch.list_namespaced_job):
            yield page

    async def list_pods(self) -> AsyncIterator[list[dict[str, Any]]]:
        async for page in self._pages("list pods", self.core.list_namespaced_pod):
            yield page

    async def _pages(self, what: str, fn: Any) -> AsyncIterator[list[dict[str, Any]]]:
        # Pages, so a relist of thousands of objects never holds every body at once: the
        # caller keeps only a snapshot of each (peak memory, README "Measured").
        token: str | None = None
        while True:
            more: dict[str, Any] = {"_continue": token} if token else {}
            resp = await self._call(
                what, fn, self.namespace, label_selector=MANAGED_SELECTOR, limit=LIST_PAGE, **more
            )
            yield list(resp.get("items") or [])
            token = (resp.get("metadata") or {}).get("continue")
            if not token:
                return

    async def create_job(self, body: dict[str, Any]) -> bool:
        """True when created now, False when it already existed (a re-create after a crash)."""
        try:
            await self._write("create Job", self.batch.create_namespaced_job, self.namespace, body)
        except KubeError as e:
            if e.status == 409:
                return False
            raise
        return True

    async def delete_job(self, name: str, grace_seconds: int | None = None) -> None:
        """Delete a Job and (in the background) its pods, which get `grace_seconds` to stop."""
        body = {"propagationPolicy": "Background"}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds  # type: ignore[assignment]
        try:
            await self._write(
                f"delete Job {name}",
                self.batch.delete_namespaced_job,
                name,
                self.namespace,
                body=body,
            )
        except KubeError as e:
            if e.status != 404:
                raise

    async def set_job_ttl(self, name: str, seconds: int) -> None:
        try:
            await self._write(
                f"patch Job {name}",
                self.batch.patch_namespaced_job,
                name,
                self.namespace,
                {"spec": {"ttlSecondsAfterFinished": seconds}},
            )
        except KubeError as e:
            if e.status != 404:
                raise

    # -- the Lease of leader election; a conflict (409) answers None: someone else wrote first.
    async def get_lease(self, name: str) -> dict[str, Any] | None:
        try:
            got = await self._call(
                f"read Lease {name}", self.coordination.read_namespaced_lease, name, self.namespace
            )
        except KubeError as e:
            if e.status == 404:
                return None
            raise
        return got

    async def create_lease(self, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            made = await self._call(
                "create Lease", self.coordination.create_namespaced_lease, self.namespace, body
            )
        except KubeError as e:
            if e.status == 409:
                return None
            raise
        return made

    async def replace_lease(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Fenced by `metadata.resourceVersion` in `body`."""
        try:
            done = await self._call(
                f"update Lease {name}",
                self.coordination.replace_namespaced_lease,
                name,
                self.namespace,
                body,
            )
        except KubeError as e:
            if e.status == 409:
                return None
            raise
        return done

    async def event(
        self, job_name: str, uid: str | None, reason: str, message: str, *, warning: bool = False
    ) -> None:
        """A Kubernetes Event on the Job, for `kubectl describe job`."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = {
            "metadata": {"name": f"{job_name}.{uuid.uuid4().hex[:12]}"},
            "involvedObject": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job_name,
                "namespace": self.namespace,
                "uid": uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "audiojob-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._write("create Event", self.core.create_namespaced_event, self.namespace, body)


def _read(call: Any, parse: bool) -> dict[str, Any]:
    resp = call()
    raw = resp.data
    resp.release_conn()
    if not raw or not parse:
        return {}
    data: dict[str, Any] = json.loads(raw)
    return data
