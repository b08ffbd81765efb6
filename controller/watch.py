"""Our own watches on the namespace's managed Jobs and pods, feeding the engine's view.

Why not kopf's: for every event kopf decodes the body into its own objects, routes it through
a per-object worker, queue and handler machinery, and most of the controller's CPU per Job was
spent there (bench/README.md). Here one streaming GET per kind decodes each line and hands
the body to the view, which keeps only a small snapshot of it.

The semantics are client-go's reflector, with the engine's relist as the list:
  - a watch starts from the resourceVersion of the view's latest relist (engine.loop
    `_relist`), so nothing between the list and the watch is missed;
  - it resumes from the last resourceVersion it saw (an event's or a BOOKMARK's) when the
    server ends the stream (`timeoutSeconds`) or the connection drops, after a backoff when it
    failed;
  - 410 Gone (at the start, or as an ERROR event: the version was compacted away, e.g. after
    an API server restart), and 504 "Too large resource version" (an API server whose cache
    is behind the version we hold: retrying it with the same version fails the same way, so
    client-go relists), ask the engine for a new relist and resume from that list's version.
    Events in the gap are lost, but the list replaces the whole view, so a DELETED event is
    never lost silently: the object is simply absent from the list.
A standby engine never relists, so its watches wait until it leads.

Anything else a watch did not expect ends it, logged, and the controller's /healthz reports
it (controller.health): a watch that silently stopped would leave the engine on the 60 s
relist alone while the controller looked healthy. `audiojob_watch_*` metrics show each
watch's state, restarts and relists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
from kubernetes.aio.client.exceptions import ApiException

from controller import metrics as m
from controller.builders import MANAGED_SELECTOR
from controller.engine.view import View
from controller.kube import Kube, KubeError, http_error

log = logging.getLogger("audiojob.watch")
KINDS = {"job": ("batch/v1", "jobs"), "pod": ("", "pods")}
WATCH_SECONDS = (240, 300)
"""The server ends each watch after a random time in this range (client-go: 5-10 min), so a
silently dead connection is noticed within minutes (besides the reader's timeout)."""
BACKOFF_SECONDS = (0.5, 30.0)


async def lines_of(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The stream's non-empty lines (one watch event each), split from whatever arrived at
    once: aiohttp's own line iterator costs several calls per line, a visible share of the
    controller's CPU with a dozen events per job (bench/README.md)."""
    parts: list[bytes] = []
    async for chunk in content.iter_any():
        parts.append(chunk)
        if b"\n" not in chunk:
            continue  # an object larger than one read: wait for its end
        *lines, rest = (b"".join(parts) if len(parts) > 1 else chunk).split(b"\n")
        parts = []
        if rest:
            parts.append(rest)
        for line in lines:
            if line.strip():
                yield line
    if parts and (last := b"".join(parts)).strip():
        yield last  # a stream that ended without its newline


class Gone(Exception):
    """The resourceVersion is too old (or too new) to watch from: relist."""


def needs_relist(status: int, body: dict[str, Any]) -> bool:
    """410 Gone, or client-go's `IsTooLargeResourceVersion`: a 504 whose Status names the
    cause `ResourceVersionTooLarge` (or, from older servers, only says so in its message)."""
    if status == 410:
        return True
    if status != 504:
        return False
    causes = (body.get("details") or {}).get("causes") or []
    return any(c.get("reason") == "ResourceVersionTooLarge" for c in causes) or (
        "Too large resource version" in str(body.get("message") or "")
    )


class Watcher:
    """Both watches; `on_event(kind, type, body)` gets ADDED/MODIFIED/DELETED, `on_gone()` is
    called when a relist is needed before watching can go on."""

    def __init__(
        self,
        *,
        kube: Kube,
        view: View,
        on_event: Callable[[str, str, dict[str, Any]], None],
        on_gone: Callable[[], None],
    ) -> None:
        self.kube = kube
        self.view = view
        self.on_event = on_event
        self.on_gone = on_gone
        self.versions: dict[str, str | None] = dict.fromkeys(KINDS)
        """The resourceVersion each watch resumes from; None until a relist gives one."""
        self.gone_count = 0

    async def run(self) -> None:
        await asyncio.gather(*(self._watch(kind) for kind in KINDS))

    async def _watch(self, kind: str) -> None:
        m.WATCH_UP.labels(kind=kind).set(0)
        try:
            await self._follow(kind)
        except Exception:
            log.exception("the %s watch stopped on an error it does not handle", kind)
            raise
        finally:
            m.WATCH_UP.labels(kind=kind).set(0)

    async def _follow(self, kind: str) -> None:
        backoff = BACKOFF_SECONDS[0]
        generation = -1
        while True:
            if self.versions[kind] is None:
                # Everything up to the latest relist is in the view: watch from there.
                await self.view.listed_after(generation)
                generation = self.view.generation
                self.versions[kind] = self.view.versions.get(kind) or None
                continue
            try:
                lines = await self._stream(kind)
            except Gone:
                self.gone_count += 1
                m.watch_ended(kind, relist=True)
                log.info("the %s watch's version cannot be watched from; relisting", kind)
                self.versions[kind] = None
                generation = self.view.generation
                self.on_gone()
                continue
            except (aiohttp.ClientError, OSError, TimeoutError, KubeError, ValueError) as e:
                # The API server is away or restarting: resume from where we were.
                m.watch_ended(kind, relist=False)
                log.warning("the %s watch failed, resuming in %.1f s: %s", kind, backoff, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_SECONDS[1])
                continue
            if lines:
                backoff = BACKOFF_SECONDS[0]

    async def _stream(self, kind: str) -> int:
        """One watch request, until the server ends it; returns how many lines it read."""
        group, plural = KINDS[kind]
        seconds = random.randint(*WATCH_SECONDS)  # noqa: S311  # spreading, not secrecy
        query = [
            ("watch", True),
            ("labelSelector", MANAGED_SELECTOR),
            ("resourceVersion", str(self.versions[kind])),
            ("allowWatchBookmarks", True),
            ("timeoutSeconds", seconds),
        ]
        m.API_REQUESTS.labels(verb="watch").inc()
        what = f"watch {plural}"
        read = 0
        try:
            resp = await self.kube.stream(
                "GET",
                self.kube.path(group, plural),
                query=query,
                timeout=aiohttp.ClientTimeout(connect=30, sock_read=seconds + 30),
            )
        except ApiException as e:  # still Retry-After once the retries ran out
            raise http_error(what, e.status or 0, e.reason) from None
        async with resp.response as body:
            if resp.status >= 400:
                raw = await body.read()
                status: dict[str, Any] = {}
                with contextlib.suppress(ValueError):
                    status = json.loads(raw)
                if isinstance(status, dict) and needs_relist(resp.status, status):
                    raise Gone()
                raise http_error(what, resp.status, resp.reason, raw)
            m.watch_streaming(kind)
            events, size = m.WATCH_EVENTS.labels(kind=kind), m.WATCH_BYTES.labels(kind=kind)
            async for line in lines_of(body.content):
                read += 1
                events.inc()
                size.inc(len(line))
                self._event(kind, what, orjson.loads(line))
        return read

    def _event(self, kind: str, what: str, event: dict[str, Any]) -> None:
        type_ = event.get("type") or ""
        body = event.get("object") or {}
        if type_ == "ERROR":
            # A Status: relist when our version cannot be watched from; anything else, resume.
            code = int(body.get("code") or 500)
            if needs_relist(code, body):
                raise Gone()
            raise http_error(what, code, body.get("message"))
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version:
            self.versions[kind] = str(version)
        if type_ in ("ADDED", "MODIFIED", "DELETED"):
            self.on_event(kind, type_, body)
