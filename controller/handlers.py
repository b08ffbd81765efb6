"""kopf handlers: thin. They build clients once, start the engine and the watches that feed it
(controller.watch), and close everything on the way out. The rules live in controller.lifecycle
and controller.engine.

What kopf does here, and only this: it runs the process. It calls `startup` and retries it with
backoff when it fails (the database or the API server away at start), turns SIGTERM and SIGINT
into an orderly stop, and then calls `cleanup`, which flushes owed outcomes, hands the Lease
over and closes the clients in that order.

What kopf does not do: it watches nothing and writes nothing. There are no resource handlers
(its per-object machinery for every Job and pod event was most of the controller's CPU per Job,
bench/README.md; our watches keep only what the view needs), scanning is off (no cluster-wide
list or watch of CRDs or namespaces, which the chart's namespaced Role could not allow anyway),
it runs standalone (no peering objects) and posts no Events. Its only API requests are API
discovery at start (five GETs: /api, /api/v1, /apis and two groups; its login reads the
credentials locally). Its liveness probe does not fit: it serves one path on a port of its own
and caches answers for 10 s, where the chart probes /healthz and /readyz beside /metrics
(controller.health)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.engine import Engine
from controller.health import liveness
from controller.kube import Kube
from controller.settings import load_settings
from controller.store import JobStore, StoreError, StoreUnavailable
from controller.watch import Watcher

log = logging.getLogger("audiojob.handlers")


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # No cluster-wide list or watch of CRDs and namespaces: nothing here uses them, and under
    # the chart's namespaced Role kopf would log ERRORs about them forever.
    settings.scanning.disabled = True

    config = load_settings()
    try:
        store = await JobStore.open(config.db)
    except StoreUnavailable:
        raise  # the database is away: kopf tries the start-up again
    except StoreError as e:
        # A wrong address or token: trying again cannot help, so stop with the sentence.
        raise kopf.PermanentError(str(e)) from None
    store.payload_rules = config.runner.network_rules
    kube: Kube | None = None
    http: web.AppRunner | None = None
    try:
        kube = await Kube.connect(
            config.kube.namespace,
            write_concurrency=config.kube.write_concurrency,
            refresh_seconds=config.kube.credential_refresh_seconds,
        )
        engine = Engine(settings=config, store=store, kube=kube)
        http = await _serve_http(memo, engine, config.metrics.host, config.metrics.port)
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


async def _serve_http(memo: kopf.Memo, engine: Engine, host: str, port: int) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        # No database read here: queue-metrics counts the rows (audiojob_rows), and a scrape
        # must answer while the database is away.
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        tasks = {"engine": memo.get("engine_task"), "watch": memo.get("watch_task")}
        alive, body = liveness(engine, {k: t for k, t in tasks.items() if t is not None})
        return web.json_response(body, status=200 if alive else 503)

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
