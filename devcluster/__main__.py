"""`python -m devcluster up|down|status`: a long-lived local control plane for people.

`up` starts it in the background (state under ~/.cache/audiojob-operator/run/cluster) and
prints how to point kubectl at it; `down` stops every process it started and removes the state.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time

from devcluster.controlplane import CACHE, LocalCluster, bin_dir
from devcluster.procs import kill_pids, pid_alive

RUN = CACHE / "run" / "cluster"


def up() -> int:
    state = RUN / "state.json"
    if state.exists():
        pids = json.loads(state.read_text())["pids"]
        if any(pid_alive(p) for p in pids.values()):
            print(f"already running; export KUBECONFIG={RUN / 'admin.kubeconfig'}")
            return 0
        shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    t0 = time.monotonic()
    cluster = LocalCluster(state_dir=RUN)
    cluster.start()
    # Leave the processes running: they are in their own sessions, so they outlive us.
    cluster.procs.clear()
    print(f"control plane ready in {time.monotonic() - t0:.1f}s (pods are simulated by kwok)")
    print(f"  export KUBECONFIG={cluster.kubeconfig}")
    print(f"  export PATH={bin_dir()}:$PATH   # kubectl and helm built for this project")
    print("  kubectl get nodes,pods -A")
    print("  make cluster-down   # stops it and removes its state")
    return 0


def down() -> int:
    state = RUN / "state.json"
    if not state.exists():
        print("no local control plane is running")
        return 0
    pids = json.loads(state.read_text())["pids"]
    left = kill_pids(pids)
    shutil.rmtree(RUN, ignore_errors=True)
    if left:
        print(f"could not stop: {', '.join(left)}", file=sys.stderr)
        return 1
    print(f"stopped {len(pids)} processes and removed {RUN}")
    return 0


def status() -> int:
    state = RUN / "state.json"
    if not state.exists():
        print("not running")
        return 1
    pids = json.loads(state.read_text())["pids"]
    for name, pid in pids.items():
        print(f"{name:25} pid {pid:7} {'running' if pid_alive(pid) else 'STOPPED'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster")
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args()
    return {"up": up, "down": down, "status": status}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
