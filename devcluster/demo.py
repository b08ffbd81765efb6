"""`make demo`: the whole product on one machine, in about a minute (after the first build).

Starts the local control plane and the real node (containerd + kubelet), runs the controller
on the embedded default database (a local SQLite file) and plays the web app: it inserts rows —
an ingest of audio served by a server on this machine, a source that 404s, a bad payload, a long
ingest it cancels while ffmpeg runs — and, once the ingest is done, a preview and a save with an
edit list. It prints the rows (stage, progress) and `kubectl get pods` with each pod's job, type,
stage and progress (`POD_COLUMNS`, as docs/operations.md shows it) as they change, then the
results and where the output files are. Where the real node cannot start, it says why and falls
back to kwok's simulated pods (nothing is downloaded or transcoded there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controller.settings import DbSettings
from controller.store import JobRow, JobStore
from devcluster.controlplane import LocalCluster, free_port
from devcluster.demo_scenes import (
    NAMESPACE,
    Scene,
    ffmpeg_gone_after,
    real_scene,
    simulated_scene,
)
from devcluster.image import build_image
from devcluster.node import NodeUnavailable
from devcluster.pybase import MissingToolError
from runner.contract import POD_COLUMNS

DEADLINE_SECONDS = 240


def finished(row: JobRow) -> bool:
    return row.status in ("complete", "failed") or (
        row.status == "cancelled" and row.finished_at is not None
    )


def describe(row: JobRow) -> str:
    if row.status == "complete":
        r = row.result_json() or {}
        if "duration" in r:
            return f"{r['duration']:.1f}s {r['codec']} {r['format']}"
        return str(r)
    if row.status == "cancelled":
        return "cancelled by the app; the controller deleted its pod"
    return row.error or ""


def print_rows(rows: dict[str, JobRow]) -> None:
    print(time.strftime("%H:%M:%S"), "rows:")
    for r in rows.values():
        stage = f"{r.stage or '-'} {r.progress}%" if r.status == "processing" else "-"
        print(
            f"  {r.job_id:18} {r.type:8} {r.status:10} try={r.attempt} {stage:18} "
            f"{describe(r)[:90]}"
        )


async def play(scene: Scene, db: DbSettings, cluster: LocalCluster) -> dict[str, JobRow]:
    """The app's side: insert, watch, cancel, follow up; returns the final rows."""
    store = await JobStore.open(db)
    try:
        ids = []
        for job_id, job_type, payload in scene.samples:
            await store.insert(job_id=job_id, type=job_type, payload=payload)  # type: ignore[arg-type]
            ids.append(job_id)
        print(f"inserted {len(ids)} rows into {db.url}\n")
        cancel_watch: asyncio.Future[float | None] | None = None
        reported = False
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            rows = await store.get_many(ids)
            for parent, make in list(scene.follow_ups.items()):
                if rows[parent].status == "complete":
                    del scene.follow_ups[parent]
                    for job_id, job_type, payload in make(rows[parent].result_json()):
                        await store.insert(job_id=job_id, type=job_type, payload=payload)  # type: ignore[arg-type]
                        ids.append(job_id)
                    print(f">>> {parent} is done: the app asks for a preview and a final render\n")
            row = rows[scene.cancel_id]
            if cancel_watch is None and row.status == "processing" and scene.cancel_when(row):
                t0 = time.monotonic()
                await store.cancel(scene.cancel_id)
                print(f">>> the app cancels '{scene.cancel_id}' while its pod runs ({row.stage})\n")
                if scene.real and row.k8s_job:
                    watch = asyncio.to_thread(ffmpeg_gone_after, cluster, row.k8s_job, t0)
                    cancel_watch = asyncio.ensure_future(watch)
            print_rows(rows)
            columns = f"custom-columns={POD_COLUMNS}"
            pods = await asyncio.to_thread(
                cluster.kubectl, "get", "pods", "-n", NAMESPACE, "-o", columns, check=False
            )
            kind = "real pods" if scene.real else "SIMULATED by kwok"
            print(f"kubectl get pods ({kind}):")
            print("".join(f"  {line[:150]}\n" for line in pods.stdout.splitlines()) or "  (none)\n")
            if cancel_watch is not None and cancel_watch.done() and not reported:
                reported = True
                if (gone := cancel_watch.result()) is not None:
                    print(f">>> ffmpeg in the cancelled pod stopped {gone:.1f}s after the cancel\n")
            if not scene.follow_ups and len(rows) == len(ids) and all(map(finished, rows.values())):
                return rows
            await asyncio.sleep(2)
        raise SystemExit(f"demo did not finish within {DEADLINE_SECONDS}s: see the controller log")
    finally:
        await store.close()


def print_outcome(scene: Scene, rows: dict[str, JobRow]) -> None:
    print("every row is terminal. Results as the app reads them:")
    for r in rows.values():
        result = r.result_json() if r.status == "complete" else None
        where = f"  -> {result['output']}" if result and "output" in result else ""
        print(f"  {r.job_id:18} {r.status:10} {describe(r)[:100]}{where}")
    if scene.output_dir is not None:
        print(f"\noutput files (the runner's /data/output) are in {scene.output_dir}:")
        for f in sorted(scene.output_dir.rglob("*")):
            if f.is_file():
                print(f"  {f.relative_to(scene.output_dir)}  ({f.stat().st_size:,} bytes)")


def start_real_node(cluster: LocalCluster) -> str | None:
    """Build the image and start the real node; the reason when this machine cannot."""
    try:
        build_image()  # instant when `make image` already built this tree
        cluster.start_real_node()
    except (NodeUnavailable, MissingToolError) as e:
        return str(e)
    return None


def run_controller(scene: Scene, db: DbSettings, cluster: LocalCluster, work: Path) -> int:
    env = (
        os.environ
        | {
            "KUBECONFIG": str(cluster.kubeconfig),
            "TURSO_DATABASE_URL": db.url,
            "AUDIOJOB_KUBE__NAMESPACE": NAMESPACE,
            "AUDIOJOB_METRICS__PORT": str(free_port()),
            "AUDIOJOB_METRICS__HOST": "127.0.0.1",
            "AUDIOJOB_CLAIM__POLL_INTERVAL_SECONDS": "1",
            "AUDIOJOB_CLAIM__HEARTBEAT_INTERVAL_SECONDS": "1",
        }
        | scene.env
    )
    log_path = work / "controller.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            rows = asyncio.run(play(scene, db, cluster))
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
    print_outcome(scene, rows)
    print(f"\ncontroller exited with {code}; its JSON log: {log_path}")
    return code


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="audiojob-demo-"))
    os.chmod(work, 0o755)  # the runner (uid 10001) reaches its output volume below it
    db = DbSettings(url=f"file:{work / 'audiojobs.db'}")
    print("starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler,")
    print("kwok) and a real node (containerd + runc + kubelet) ...\n")
    with LocalCluster(nodes=2) as cluster:
        cluster.kubectl("create", "namespace", NAMESPACE)
        why_not = start_real_node(cluster)
        with contextlib.ExitStack() as stack:
            if why_not is None:
                assert cluster.node is not None
                print(f"real node {cluster.node.name} is Ready: job pods run the image from")
                print("`make image` and really download and transcode audio.\n")
                scene = stack.enter_context(real_scene(cluster, cluster.node, work))
            else:
                print(f"FALLING BACK TO KWOK: the real node cannot start here: {why_not}")
                print("Pods are SIMULATED by kwok: nothing is downloaded or transcoded.\n")
                scene = simulated_scene()
            code = run_controller(scene, db, cluster, work)
    print("control plane and node stopped and removed.")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
