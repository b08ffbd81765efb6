"""The few Kubernetes calls the engine makes, as plain-dict async functions over one aiohttp
session.

Why not the official client: it is synchronous, so every call needed a thread, and building its
models (or even its urllib3 round trip under the GIL) cost more CPU per Job than the rest of the
controller (README, "Measured"). The official package still loads the credentials (in-cluster
token with its periodic re-read, or a kubeconfig with its CA, client certificate, token or exec
plugin), so nothing about authentication is ours. It also resolves the connection settings the
threaded client honoured, which every request here applies: the proxy (the kubeconfig's
`proxy-url`, else HTTPS_PROXY/ALL_PROXY unless NO_PROXY matches, as the official Configuration
resolves them; aiohttp's own `trust_env` stays off so the two never disagree) with its
`proxy_headers`, `tls-server-name` and `insecure-skip-tls-verify`. A proxy aiohttp cannot
speak (SOCKS) is refused at start, never bypassed. Writes share a bound
(`AUDIOJOB_KUBE__WRITE_CONCURRENCY`), so a big claim batch creates its Jobs in parallel without
flooding the API server. controller.watch streams the managed Jobs and pods over the same
session.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import kubernetes
from kubernetes.client.rest import should_bypass_proxies

from controller.builders import MANAGED_SELECTOR
from controller.metrics import kube_call

LIST_PAGE = 250
"""Objects per page of a relist."""
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


def load_config() -> kubernetes.client.Configuration:
    """In-cluster credentials, else the kubeconfig (`KUBECONFIG` or ~/.kube/config)."""
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=config)  # type: ignore[no-untyped-call]
    return config


def ssl_context(config: kubernetes.client.Configuration) -> ssl.SSLContext | bool:
    if not config.host.startswith("https"):
        return False
    ctx = ssl.create_default_context(
        cafile=config.ssl_ca_cert or None, cadata=getattr(config, "ca_cert_data", None) or None
    )
    if config.cert_file:
        ctx.load_cert_chain(config.cert_file, config.key_file or None)
    if not config.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def transport_options(config: kubernetes.client.Configuration) -> dict[str, Any]:
    """The per-request proxy and TLS server name the official client would use for
    `config.host`. Raises KubeError, at start, for a proxy aiohttp cannot use."""
    options: dict[str, Any] = {}
    if config.host.startswith("https") and config.tls_server_name:
        options["server_hostname"] = config.tls_server_name
    proxy = config.proxy
    if not proxy or should_bypass_proxies(config.host, getattr(config, "no_proxy", None) or ""):
        return options
    parts = urlsplit(proxy)
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"  # never its password
        raise KubeError(
            f"The Kubernetes API proxy {shown} (the kubeconfig cluster's proxy-url, or"
            " HTTPS_PROXY/ALL_PROXY) is not an http:// or https:// proxy, the only kinds this"
            " controller can use: set it to an http:// (CONNECT) proxy, or remove it to connect"
            " directly.",
            transient=False,
        )
    options["proxy"] = proxy
    if config.proxy_headers:
        options["proxy_headers"] = config.proxy_headers
    return options


def check_transport() -> None:
    """Raise, before the operator starts, the KubeError of a proxy this client cannot use:
    kopf would otherwise retry its start-up with that sentence forever. Credentials that do
    not load yet are left to the start-up, which retries them."""
    try:
        config = load_config()
    except (kubernetes.config.ConfigException, OSError):
        return
    transport_options(config)


class KubeSession:
    """The one aiohttp session, with the proxy and TLS server name on every request
    (controller.watch streams through it too)."""

    def __init__(self, session: aiohttp.ClientSession, options: dict[str, Any]) -> None:
        self._session = session
        self._options = options

    @property
    def closed(self) -> bool:
        return self._session.closed

    def request(
        self, method: str, url: str, **kwargs: Any
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        return self._session.request(method, url, **self._options, **kwargs)

    def get(self, url: str, **kwargs: Any) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        return self.request("GET", url, **kwargs)

    async def close(self) -> None:
        await self._session.close()


class Kube:
    def __init__(
        self,
        api: kubernetes.client.ApiClient | kubernetes.client.Configuration,
        namespace: str,
        *,
        write_concurrency: int = 16,
    ) -> None:
        """`api`: an official client's, or just a loaded, Configuration (all that is used)."""
        self.config: kubernetes.client.Configuration = (
            api.configuration if isinstance(api, kubernetes.client.ApiClient) else api
        )
        self.namespace = namespace
        self.base = self.config.host.rstrip("/")
        self.ssl = ssl_context(self.config)
        self.transport = transport_options(self.config)
        self._writes = asyncio.Semaphore(write_concurrency)
        # Writes, plus lists, the Lease and the watches, each with a pooled connection.
        self._connections = write_concurrency + 4 + WATCH_CONNECTIONS
        self._session: KubeSession | None = None

    @classmethod
    def connect(cls, namespace: str, *, write_concurrency: int = 16) -> Kube:
        # No ApiClient: its urllib3 pool would fail on a SOCKS proxy before our sentence.
        return cls(load_config(), namespace, write_concurrency=write_concurrency)

    @property
    def session(self) -> KubeSession:
        # Made on first use, inside the running event loop (aiohttp binds to it).
        if self._session is None or self._session.closed:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=self.ssl),
                # A watch line is one whole object; 64 KiB (the default) is too small for some.
                read_bufsize=1 << 20,
                # The Configuration already chose the proxy from the environment (above).
                trust_env=False,
            )
            self._session = KubeSession(session, self.transport)
        return self._session

    def headers(self) -> dict[str, str]:
        # Asked per request: in-cluster the hook re-reads the projected token file when due.
        headers = {"Accept": "application/json"}
        token = self.config.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            headers["Authorization"] = token
        elif self.config.username:
            raw = f"{self.config.username}:{self.config.password or ''}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(raw).decode()}"
        return headers

    def path(self, group: str, kind: str, name: str | None = None) -> str:
        """`group` is "" for the core API, else e.g. "batch/v1"."""
        root = "/api/v1" if not group else f"/apis/{group}"
        tail = f"/{name}" if name else ""
        return f"{self.base}{root}/namespaces/{self.namespace}/{kind}{tail}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @kube_call
    async def _call(
        self,
        what: str,
        method: str,
        url: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        parse: bool = True,
    ) -> dict[str, Any]:
        """One request; the answer as JSON (an empty dict when the caller needs only the
        status). Errors are KubeError, with the HTTP status when there was one."""
        headers = self.headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            async with self.session.request(
                method,
                url,
                data=data,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise http_error(what, resp.status, resp.reason, raw)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            # The API server is away or slow: worth trying again later.
            raise KubeError(f"{what}: {e or type(e).__name__}", transient=True) from None
        if not raw or not parse:
            return {}
        try:
            answer: dict[str, Any] = json.loads(raw)
        except ValueError as e:  # a proxy's error page, a truncated body
            raise KubeError(f"{what}: the answer is not JSON ({e})", transient=True) from None
        return answer

    async def _write(self, what: str, method: str, url: str, **kwargs: Any) -> None:
        async with self._writes:
            await self._call(what, method, url, parse=False, **kwargs)

    async def list_jobs(self) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        """The namespace's managed Jobs a page at a time, each with the list's
        resourceVersion (the watch starts from it: controller.watch)."""
        async for page in self._pages("list Jobs", self.path("batch/v1", "jobs")):
            yield page

    async def list_pods(self) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        async for page in self._pages("list pods", self.path("", "pods")):
            yield page

    async def _pages(self, what: str, url: str) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        # Pages, so a relist of thousands of objects never holds every body at once: the
        # caller keeps only a snapshot of each (peak memory, README "Measured").
        token: str | None = None
        while True:
            params = {"labelSelector": MANAGED_SELECTOR, "limit": str(LIST_PAGE)}
            if token:
                params["continue"] = token
            resp = await self._call(what, "GET", url, params=params)
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
