"""kopf handlers: thin. They build clients once, start the engine and the watches that feed it
(controller.watch), and close everything on the way out. The rules live in controller.lifecycle
and controller.engine.

kopf watches nothing here: no resource handlers. Its per-object machinery for every Job and pod
event was most of the controller's CPU per Job (README, "Measured"); our watches keep only what
the view needs. kopf still runs the operator: start-up, signals, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.engine import Engine
from controller.kube import Kube
from controller.settings import load_settings
from controller.store import JobStore
from controller.watch import Watcher

log = logging.getLogger("audiojob.handlers")


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our names, never kopf's defaults (kopf.zalando.org), should kopf ever write anything.
    settings.persistence.finalizer = "audiojob.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="audiojob.dev")
    # We post our own, deliberate Events on Jobs; kopf's per-handler Events would be noise.
    settings.posting.enabled = False
    # Outages of the API server are retried with backoff, never fatal.
    settings.networking.error_backoffs = [1, 2, 5, 10, 20, 30]

    config = load_settings()
    store = await JobStore.open(config.db)
    store.payload_rules = config.runner.network_rules
    kube: Kube | None = None
    http: web.AppRunner | None = None
    try:
        kube = Kube.connect(config.kube.namespace, write_concurrency=config.kube.write_concurrency)
        engine = Engine(settings=config, store=store, kube=kube)
        http = await _serve_http(engine, config.metrics.host, config.metrics.port)
    except BaseException:
        # Failed (kopf retries start-up) or cancelled (we are being stopped): cleanup will not
        # know these exist, and the database client's thread would keep the process alive.
        if http is not None:
            await http.cleanup()
        await store.close()
        if kube is not None:
            await kube.close()
        raise
    watcher = Watcher(
        kube=kube, view=engine.view, on_event=engine.observe, on_gone=engine.relist_soon
    )
    memo.http = http
    memo.engine = engine
    memo.engine_task = asyncio.create_task(engine.run(), name="audiojob-engine")
    memo.watch_task = asyncio.create_task(watcher.run(), name="audiojob-watch")
    log.info(
        "controller started",
        extra={
            "installation": engine.installation,
            "holder": engine.leader.holder,
            "namespace": config.kube.namespace,
        },
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    engine: Engine | None = memo.get("engine")
    if engine is None:
        return
    await engine.shutdown()
    tasks: list[asyncio.Task[None]] = [memo.engine_task, memo.watch_task]
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await memo.http.cleanup()
    await engine.store.close()
    await engine.kube.close()
    log.info("controller stopped; running Jobs keep running for the next controller")


async def _serve_http(engine: Engine, host: str, port: int) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        # No database read here: queue-metrics counts the rows (audiojob_rows), and a scrape
        # must answer while the database is away.
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        # Alive while the engine task runs; a DB outage is not a reason to restart us.
        task_ok = not engine.stopping
        return web.json_response(engine.health(), status=200 if task_ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response(engine.health(), status=200 if engine.ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info("serving /metrics, /healthz, /readyz", extra={"port": bound})
    return runner
