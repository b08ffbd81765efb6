"""A plain-HTTP reverse proxy in front of the local API server that injects faults the API
server will not produce on demand: a 429 with Retry-After, a watch connection cut mid-stream,
a watch line that is not an event. Everything else passes through to the real API server, with
the client's own credentials. It runs on its own thread and event loop, so a test can use it
from synchronous code (a controller process) or from its own loop (a client in the test).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from devcluster.controlplane import LocalCluster
from devcluster.pki import write_kubeconfig

HOP_BY_HOP = {
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "upgrade",
}


@dataclass
class Fault:
    """Applies to the next `times` requests that `match` (method, path with query)."""

    match: Callable[[str, str], bool]
    status: int | None = None
    """Answer with this status at once (the API server never sees the request)."""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"{}"
    after_lines: int = 0
    """For a passed-through stream: lines forwarded before the fault."""
    inject: bytes | None = None
    """Written into the stream after `after_lines` lines."""
    cut: bool = False
    """Abort the connection after `after_lines` lines (and after `inject`)."""
    times: int = 1


@dataclass
class Seen:
    mono: float
    method: str
    path: str
    status: int


class FaultProxy:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path) -> Path:
        """The admin's token, with this proxy as the server."""
        token = self.cluster.admin_token
        write_kubeconfig(path, server=self.url, ca_file=self.cluster.ca_file, token=token)
        return path

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def requests(self, method: str, fragment: str) -> list[Seen]:
        return [s for s in list(self.seen) if s.method == method and fragment in s.path]

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _start(self) -> None:
        ctx = ssl.create_default_context(cafile=str(self.cluster.ca_file))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx), read_bufsize=1 << 22, auto_decompress=False
        )
        app = web.Application(client_max_size=1 << 24)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        assert self._runner is not None and self._session is not None
        # Upstream first: that ends the streams still open (watches), then their handlers.
        await self._session.close()
        await self._runner.cleanup()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.match(method, path):
                fault.times -= 1
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path_qs
        fault = self._fault_for(request.method, path)
        if fault is not None and fault.status is not None:
            self.seen.append(Seen(time.monotonic(), request.method, path, fault.status))
            headers = {"Content-Type": "application/json", **fault.headers}
            return web.Response(status=fault.status, headers=headers, body=fault.body)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        # No body, no data: aiohttp would send an empty one as application/octet-stream,
        # which the API server refuses (415) even on a GET.
        body = await request.read() or None
        async with self._session.request(
            request.method,
            f"{self.cluster.server}{path}",
            headers=headers,
            data=body,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as upstream:
            self.seen.append(Seen(time.monotonic(), request.method, path, upstream.status))
            resp = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            await resp.prepare(request)
            lines = 0
            try:
                async for line in upstream.content:
                    if fault is not None and lines == fault.after_lines:
                        if fault.inject is not None:
                            await resp.write(fault.inject)
                        if fault.cut:
                            break
                        fault = None
                    await resp.write(line)
                    lines += 1
                else:
                    await resp.write_eof()
                    return resp
            except (aiohttp.ClientError, ConnectionError):
                pass  # upstream ended mid-stream (the proxy stopping): end ours the same way
            if request.transport is not None:
                request.transport.abort()
            return resp
