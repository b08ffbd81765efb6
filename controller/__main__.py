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
    # One replica (kopf's peering would freeze two at equal priority), so no peering objects.
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(
            kopf.operator(standalone=True, namespaces=[settings.kube.namespace], clusterwide=False)
        )
    return 0


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
