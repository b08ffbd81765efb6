"""`audiojob-controller` / `python -m controller`: run the operator (`python -m controller
status`: the status view, controller.status)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio


def _stop_before_kopf_runs(signum: int, frame: FrameType | None) -> None:
    # Until kopf installs its own handlers nothing has happened that the next controller would
    # not adopt (a claimed row without a Job gets its Job on adoption), so a stop is clean.
    raise SystemExit(0)


def main() -> int:
    if sys.argv[1:2] == ["status"]:  # `python -m controller status`, as `audiojob status`
        from controller.status import main as status  # noqa: PLC0415

        return status(sys.argv[1:])
    # Kubernetes (or KEDA scaling back to zero) may send SIGTERM while we are still importing
    # kopf and the Kubernetes client, which takes seconds; that must still be exit 0.
    signal.signal(signal.SIGTERM, _stop_before_kopf_runs)
    import asyncio  # noqa: PLC0415

    import kopf  # noqa: PLC0415

    from controller import (  # noqa: PLC0415
        handlers,  # noqa: F401  # registers the kopf handlers
        logs,
    )
    from controller.settings import SettingsError, load_settings  # noqa: PLC0415

    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"audiojob-controller: {e}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level)
    _tune_gc()
    # One replica (kopf's peering would freeze two at equal priority), so no peering objects.
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(
            kopf.operator(standalone=True, namespaces=[settings.kube.namespace], clusterwide=False)
        )
    return 0


def _tune_gc() -> None:
    """Fewer garbage collections: every watch event decodes to a few hundred dicts and lists,
    and at the default threshold (700 allocations) the collector ran ~650 times in a run of
    1,000 jobs, 8 % of the controller's CPU (bench/README.md). The objects made by the
    imports live for the whole process and are set aside (`freeze`), so no collection walks
    them again. Garbage without cycles is freed at once whatever the threshold; what waits for
    a collection is only cyclic garbage, which the controller makes little of."""
    import gc  # noqa: PLC0415

    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (every Linux and macOS install): it cut the
    controller's CPU per job by a sixth (bench/README.md); asyncio's own elsewhere."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    sys.exit(main())
