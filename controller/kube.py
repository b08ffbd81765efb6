"""The few Kubernetes calls the engine makes, as plain-dict async functions on the official
asyncio client, `kubernetes.aio`.

The library owns the transport and the credentials: its ApiClient (aiohttp) loaded from the
pod's service account (the token re-read every minute, so a projected token's rotation is picked
up) or from a kubeconfig (CA, client certificate, token, exec plugin run as an asyncio
subprocess and renewed in the background by `kubernetes.aio.config.refresh_token`, proxy-url,
tls-server-name, insecure-skip-tls-verify; HTTPS_PROXY/NO_PROXY as aiohttp reads them).

Requests go through `ApiClient.param_serialize` and `call_api` (auth, headers, serialization,
connection pool), and answers are decoded as plain JSON: the generated `*Api` methods validate
every argument with pydantic and build models, which cost more CPU per Job than the rest of the
controller did (bench/README.md).

Where the library falls short, the gap is filled in one place each:
  - Retry-After is honoured by the library only for GETs, and only with `client_go_retries`:
    every call here goes through the library's own `on_retry_after_error` (client-go's rule:
    a 429, or a 5xx with Retry-After, is sent again after at least that long). Our writes are
    safe to repeat (create answers 409, delete 404), so that holds for them too.
  - A client certificate read only once, and aiohttp's `trust_env`: controller.kubeconfig.
Writes share a bound (`AUDIOJOB_KUBE__WRITE_CONCURRENCY`), so a big claim batch creates its Jobs
in parallel without flooding the API server. controller.watch streams through `stream()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from kubernetes.aio import client as aio
from kubernetes.aio import config as aio_config
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.client.rest import RESTResponse
from kubernetes.aio.utils import (
    is_retry_after_response,
    on_retry_after_error,
    retry_after_backoff,
)

from controller import __version__
from controller.builders import MANAGED_SELECTOR
from controller.kubeconfig import ClientCert, load_config, proxy_once
from controller.metrics import kube_call

LIST_PAGE = 100
"""Objects per page of a relist: a page of 250 pods decoded to ~15 MiB of dicts at once, which
set the controller's peak RSS with 1,000 in flight (bench/README.md)."""
REQUEST_TIMEOUT_SECONDS = 30
WATCH_CONNECTIONS = 2
"""One long-lived connection per watched kind (controller.watch)."""


class KubeError(Exception):
    """An API call failed; `transient` tells whether trying again later can help."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


def http_error(what: str, status: int, reason: str | None, body: bytes = b"") -> KubeError:
    """The API's own sentence (a Status `message`, e.g. which field of a Job is invalid) when
    the answer has one, else the HTTP reason."""
    detail = reason or ""
    with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not a Status
        detail = json.loads(body).get("message") or detail
    transient = status >= 500 or status in (408, 429)
    return KubeError(f"{what}: HTTP {status} {detail}".strip(), transient=transient, status=status)


class Kube:
    def __init__(
        self,
        api: aio.ApiClient,
        namespace: str,
        *,
        write_concurrency: int = 16,
        loader: Any = None,
        refresh_seconds: float = 60.0,
    ) -> None:
        """`api`: a `kubernetes.aio` ApiClient, closed with this object. `loader`: the
        kubeconfig's, whose exec-plugin token is renewed every `refresh_seconds`."""
        self.api = api
        self.namespace = namespace
        api.user_agent = f"audiojob-operator/{__version__}"
        self._writes = asyncio.Semaphore(write_concurrency)
        self._cert = ClientCert(api)
        self._refresh: asyncio.Task[None] | None = None
        user = getattr(loader, "_user", None)  # refresh_token fails on a context with no user
        if loader is not None and user is not None and "exec" in user:
            self._refresh = asyncio.create_task(
                aio_config.refresh_token(loader, api.configuration, refresh_seconds),  # type: ignore[no-untyped-call]
                name="audiojob-kube-credentials",
            )

    @classmethod
    async def connect(
        cls,
        namespace: str,
        *,
        config_file: str | Path | None = None,
        write_concurrency: int = 16,
        refresh_seconds: float = 60.0,
    ) -> Kube:
        config, loader = await load_config(config_file)
        # Writes, plus lists, the Lease and the watches, each with a pooled connection.
        config.connection_pool_maxsize = write_concurrency + 4 + WATCH_CONNECTIONS
        proxy_once(config)
        return cls(
            aio.ApiClient(config),
            namespace,
            write_concurrency=write_concurrency,
            loader=loader,
            refresh_seconds=refresh_seconds,
        )

    def path(self, group: str, kind: str, name: str | None = None) -> str:
        """`group` is "" for the core API, else e.g. "batch/v1"."""
        root = "/api/v1" if not group else f"/apis/{group}"
        tail = f"/{name}" if name else ""
        return f"{root}/namespaces/{self.namespace}/{kind}{tail}"

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        await self.api.close()  # type: ignore[no-untyped-call]

    async def stream(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout | float = REQUEST_TIMEOUT_SECONDS,  # noqa: ASYNC109  # passed to aiohttp per request, as the library takes it
    ) -> RESTResponse:
        """One request through the library's client, its body not read yet; answers with
        Retry-After are retried after it. Transport failures raise aiohttp's or OSError."""
        await self._cert.check()

        async def once() -> RESTResponse:
            # The body goes straight to the REST layer (which JSON-encodes it): it is plain
            # JSON already, and param_serialize's walk over every field of it is a no-op that
            # cost a third of a Job creation's CPU.
            method_, url, headers, _, post = await self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=query,
                header_params={"Accept": "application/json", "Content-Type": content_type},
                auth_settings=["BearerToken"],
            )
            resp = await self.api.call_api(
                method_, url, headers, body, post, _request_timeout=timeout
            )
            if resp.status == 429 or resp.status >= 500:
                error = ApiException(status=resp.status, reason=resp.reason)
                error.headers = resp.headers
                if is_retry_after_response(error):
                    resp.response.release()
                    raise error
            return resp

        return await on_retry_after_error(retry_after_backoff(), is_retry_after_response, once)

    @kube_call
    async def _call(
        self,
        what: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
        parse: bool = True,
    ) -> dict[str, Any]:
        """One request; the answer as JSON (an empty dict when the caller needs only the
        status). Errors are KubeError, with the HTTP status when there was one."""
        try:
            resp = await self.stream(
                method, path, query=query, body=body, content_type=content_type
            )
            raw: bytes = await resp.read()  # type: ignore[no-untyped-call]
        except ApiException as e:  # still Retry-After once the retries ran out
            raise http_error(what, e.status or 0, e.reason) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            # The API server is away or slow: worth trying again later.
            raise KubeError(f"{what}: {e or type(e).__name__}", transient=True) from None
        if resp.status >= 400:
            raise http_error(what, resp.status, resp.reason, raw)
        if not raw or not parse:
            return {}
        try:
            answer: dict[str, Any] = orjson.loads(raw)
        except ValueError as e:  # a proxy's error page, a truncated body
            raise KubeError(f"{what}: the answer is not JSON ({e})", transient=True) from None
        return answer

    async def _write(self, what: str, method: str, path: str, **kwargs: Any) -> None:
        async with self._writes:
            await self._call(what, method, path, parse=False, **kwargs)

    async def list_jobs(self) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        """The namespace's managed Jobs a page at a time, each with the list's
        resourceVersion (the watch starts from it: controller.watch)."""
        async for page in self._pages("list Jobs", self.path("batch/v1", "jobs")):
            yield page

    async def list_pods(self) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        async for page in self._pages("list pods", self.path("", "pods")):
            yield page

    async def _pages(self, what: str, path: str) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        # Pages, so a relist of thousands of objects never holds every body at once: the
        # caller keeps only a snapshot of each (peak memory, bench/README.md).
        token: str | None = None
        while True:
            query: list[tuple[str, Any]] = [
                ("labelSelector", MANAGED_SELECTOR),
                ("limit", LIST_PAGE),
            ]
            if token:
                query.append(("continue", token))
            resp = await self._call(what, "GET", path, query=query)
            meta = resp.get("metadata") or {}
            yield list(resp.get("items") or []), str(meta.get("resourceVersion") or "")
            token = meta.get("continue")
            if not token:
                return

    async def create_job(self, body: dict[str, Any]) -> bool:
        """True when created now, False when it already existed (a re-create after a crash)."""
        try:
            await self._write("create Job", "POST", self.path("batch/v1", "jobs"), body=body)
        except KubeError as e:
            if e.status == 409:
                return False
            raise
        return True

    async def delete_job(self, name: str, grace_seconds: int | None = None) -> None:
        """Delete a Job and (in the background) its pods, which get `grace_seconds` to stop."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            await self._write(
                f"delete Job {name}", "DELETE", self.path("batch/v1", "jobs", name), body=body
            )
        except KubeError as e:
            if e.status != 404:
                raise

    async def delete_pod(self, name: str, grace_seconds: int) -> None:
        """Delete a pod with `grace_seconds` to stop; already gone is fine."""
        try:
            await self._write(
                f"delete pod {name}",
                "DELETE",
                self.path("", "pods", name),
                body={"gracePeriodSeconds": grace_seconds},
            )
        except KubeError as e:
            if e.status != 404:
                raise

    async def set_job_ttl(self, name: str, seconds: int) -> None:
        try:
            await self._write(
                f"patch Job {name}",
                "PATCH",
                self.path("batch/v1", "jobs", name),
                body={"spec": {"ttlSecondsAfterFinished": seconds}},
                content_type="application/merge-patch+json",
            )
        except KubeError as e:
            if e.status != 404:
                raise

    # -- the Lease of leader election; a conflict (409) answers None: someone else wrote first.
    def _lease(self, name: str | None = None) -> str:
        return self.path("coordination.k8s.io/v1", "leases", name)

    async def get_lease(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._call(f"read Lease {name}", "GET", self._lease(name))
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    async def create_lease(self, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return await self._call("create Lease", "POST", self._lease(), body=body)
        except KubeError as e:
            if e.status == 409:
                return None
            raise

    async def replace_lease(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Fenced by `metadata.resourceVersion` in `body`."""
        try:
            return await self._call(f"update Lease {name}", "PUT", self._lease(name), body=body)
        except KubeError as e:
            if e.status == 409:
                return None
            raise

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
        await self._write("create Event", "POST", self.path("", "events"), body=body)
