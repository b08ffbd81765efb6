"""`make demo`: the whole product on one machine, in about a minute.

Starts the local control plane (pods are SIMULATED by kwok: no container runs, no audio is
processed; the pods only play out the phases a real runner would), runs the controller on the
embedded default database (a local SQLite file), inserts sample rows of each type — one with a
bad payload that fails, one that the "app" cancels while it runs — and prints the rows and
`kubectl get pods` as they change, until every row is terminal.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controller.settings import DbSettings
from controller.store import JobStore
from devcluster.controlplane import LocalCluster, binary, free_port

NAMESPACE = "audiojob-jobs"
SAMPLES: list[tuple[str, str, object]] = [
    ("podcast-ep-1", "ingest", {"url": "https://example.com/ep1.mp3", "format": "mp3"}),
    (
        "podcast-ep-1-preview",
        "preview",
        {"input": "podcast-ep-1.mp3", "edits": [{"op": "trim", "start": 0, "end": 30}]},
    ),
    (
        "podcast-ep-1-final",
        "save",
        {
            "input": "podcast-ep-1.mp3",
            "edits": [{"op": "fade_in", "duration": 2}],
            "format": "flac",
        },
    ),
    ("broken-upload", "ingest", '{"url": https://example.com/oops}'),
    ("changed-my-mind", "save", {"input": "podcast-ep-1.mp3", "format": "wav"}),
]
TERMINAL = {"complete", "failed"}


async def _store(db: DbSettings) -> JobStore:
    return await JobStore.open(db)


async def demo(db: DbSettings, kubectl: list[str]) -> None:
    store = await _store(db)
    try:
        for job_id, job_type, payload in SAMPLES:
            await store.insert(job_id=job_id, type=job_type, payload=payload)  # type: ignore[arg-type]
        print(f"inserted {len(SAMPLES)} rows into {db.url}\n")
        cancelled = False
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            rows = await store.get_many([s[0] for s in SAMPLES])
            row = rows.get("changed-my-mind")
            if not cancelled and row is not None and row.status == "processing" and row.k8s_job:
                await store.cancel("changed-my-mind")
                cancelled = True
                print(">>> the app cancels 'changed-my-mind' while its pod runs\n")
            print(time.strftime("%H:%M:%S"), "rows:")
            for job_id, _, _ in SAMPLES:
                r = rows[job_id]
                detail = r.error or (r.result or "")
                print(
                    f"  {job_id:22} {r.type:8} {r.status:10} attempt={r.attempt} "
                    f"stage={r.stage or '-':12} {detail[:70]}"
                )
            pods = (
                await asyncio.to_thread(
                    subprocess.run,
                    [*kubectl, "get", "pods", "-n", NAMESPACE, "--no-headers"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
            ).stdout
            print("kubectl get pods (simulated by kwok):")
            print("".join(f"  {line}\n" for line in pods.splitlines()) or "  (none)\n")
            done = all(
                r.status in TERMINAL or (r.status == "cancelled" and r.finished_at)
                for r in rows.values()
            )
            if done:
                print("every row is terminal. The controller recorded each outcome above.")
                return
            await asyncio.sleep(2)
        raise SystemExit("demo did not finish within 3 minutes: see the controller log")
    finally:
        await store.close()


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="audiojob-demo-"))
    db = DbSettings(url=f"file:{work / 'audiojobs.db'}")
    print("starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler,")
    print("kwok). Pods are SIMULATED by kwok: nothing is downloaded or transcoded.\n")
    with LocalCluster(nodes=2) as cluster:
        cluster.kubectl("create", "namespace", NAMESPACE)
        message = json.dumps({"ok": True, "result": {"simulated": True}})
        env = os.environ | {
            "KUBECONFIG": str(cluster.kubeconfig),
            "TURSO_DATABASE_URL": db.url,
            "AUDIOJOB_KUBE__NAMESPACE": NAMESPACE,
            "AUDIOJOB_RUNNER__SERVICE_ACCOUNT": "default",
            "AUDIOJOB_METRICS__PORT": str(free_port()),
            "AUDIOJOB_CLAIM__POLL_INTERVAL_SECONDS": "1",
            "AUDIOJOB_CLAIM__HEARTBEAT_INTERVAL_SECONDS": "1",
            "AUDIOJOB_RUNNER__POD_ANNOTATIONS": json.dumps(
                {
                    "audiojob.dev/sim-duration": "6s",
                    "audiojob.dev/sim-message": message,
                    "audiojob.dev/sim-term-delay": "1s",
                }
            ),
        }
        log_path = work / "controller.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "controller"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                kubectl = [str(binary("kubectl")), f"--kubeconfig={cluster.kubeconfig}"]
                asyncio.run(demo(db, kubectl))
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(30)
        print(f"\ncontroller exited with {code}; its JSON log: {log_path}")
    print("control plane stopped and removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
