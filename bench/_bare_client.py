"""The baselines of bench_controller.py: a bare client creating the same Job bodies as the
controller, with the same concurrency, in a process of its own (so its CPU is its own).

Three clients:
  aiohttp  the fastest bare client we could write: one aiohttp session (one keep-alive pool of
           `concurrency` connections), `concurrency` workers each POSTing the next body as
           JSON bytes and reading the status only. No models, no per-request serialization
           layer. This is the limit the controller is measured against.
  aio      the official asyncio client, `kubernetes.aio`, used as documented:
           `BatchV1Api.create_namespaced_job(namespace, body)` from `concurrency` workers.
  threads  the official synchronous client, `kubernetes.client`, in `concurrency` threads
           (the baseline before issue 21, kept for comparison with earlier figures).

Run as `python -m bench._bare_client MODE KUBECONFIG NAMESPACE N CONCURRENCY`: builds the N
bodies (as the controller does, through controller.builders), creates them, and prints one
JSON object: `seconds` (wall, creation only) and `cpu_s` (this process's CPU over building
and creating, `time.process_time()`: all threads).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import kubernetes  # noqa: E402

from controller.builders import build_job  # noqa: E402
from controller.settings import Settings  # noqa: E402

MODES = ("aiohttp", "aio", "threads")


def bodies(namespace: str, n: int) -> Iterator[dict[str, Any]]:
    settings = Settings.model_validate(
        {"kube": {"namespace": namespace}, "runner": {"service_account": "default"}}
    )
    payload = json.dumps({"url": "https://example.com/a.mp3"})
    for i in range(n):
        yield build_job(
            job_id=f"c{i:05d}",
            job_type="ingest",
            attempt=1,
            trace_id=uuid.uuid4().hex,
            payload_json=payload,
            settings=settings,
        )


async def _workers(concurrency: int, items: Iterator[Any], fn: Any) -> None:
    async def worker() -> None:
        for item in items:
            await fn(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def create_aiohttp(kubeconfig: str, namespace: str, n: int, concurrency: int) -> None:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=config)  # type: ignore[no-untyped-call]
    ctx = ssl.create_default_context(cafile=config.ssl_ca_cert)
    if config.cert_file:
        ctx.load_cert_chain(config.cert_file, config.key_file)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    token = config.get_api_key_with_prefix("BearerToken", alias="authorization")
    if token:
        headers["Authorization"] = token
    url = f"{config.host}/apis/batch/v1/namespaces/{namespace}/jobs"
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=ctx)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def post(body: dict[str, Any]) -> None:
            async with session.post(url, data=json.dumps(body).encode()) as resp:
                await resp.read()
                if resp.status != 201:
                    raise RuntimeError(f"create Job: HTTP {resp.status}")

        await _workers(concurrency, bodies(namespace, n), post)


async def create_aio(kubeconfig: str, namespace: str, n: int, concurrency: int) -> None:
    from kubernetes.aio import client as aio  # noqa: PLC0415
    from kubernetes.aio import config as aio_config  # noqa: PLC0415

    config = aio.Configuration()
    await aio_config.load_kube_config(config_file=kubeconfig, client_configuration=config)  # type: ignore[no-untyped-call]
    config.connection_pool_maxsize = concurrency
    async with aio.ApiClient(config) as api:
        batch = aio.BatchV1Api(api)

        async def post(body: dict[str, Any]) -> None:
            await batch.create_namespaced_job(namespace, body)

        await _workers(concurrency, bodies(namespace, n), post)


def create_threads(kubeconfig: str, namespace: str, n: int, concurrency: int) -> None:
    api = kubernetes.config.new_client_from_config(kubeconfig)  # type: ignore[no-untyped-call]
    api.rest_client.pool_manager.connection_pool_kw["maxsize"] = concurrency
    batch = kubernetes.client.BatchV1Api(api)
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda b: batch.create_namespaced_job(namespace, b), bodies(namespace, n)))


def main(mode: str, kubeconfig: str, namespace: str, n: int, concurrency: int) -> dict[str, float]:
    cpu0, wall0 = time.process_time(), time.monotonic()
    if mode == "aiohttp":
        asyncio.run(create_aiohttp(kubeconfig, namespace, n, concurrency))
    elif mode == "aio":
        asyncio.run(create_aio(kubeconfig, namespace, n, concurrency))
    elif mode == "threads":
        create_threads(kubeconfig, namespace, n, concurrency)
    else:
        raise SystemExit(f"mode must be one of {MODES}")
    return {"seconds": time.monotonic() - wall0, "cpu_s": time.process_time() - cpu0}


if __name__ == "__main__":
    mode, kubeconfig, namespace, n, concurrency = sys.argv[1:6]
    print(json.dumps(main(mode, kubeconfig, namespace, int(n), int(concurrency))), flush=True)
