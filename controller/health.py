"""What /healthz and /readyz answer: liveness that tells the truth.

/healthz fails (503, with the reasons) when the engine task or the watch task has ended, or when
the engine's loop has not come round for `STALLED_AFTER_INTERVALS` of its own intervals. A flag
set at start would stay green while a dead watch left the engine relisting once a minute, or a
hung call froze the loop; the kubelet restarts a controller whose /healthz keeps failing, which
is the cure for both. A database or API outage is not a failure here: the loop still comes
round (backing off), and a restart would not bring the database back.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.engine import Engine

STALLED_AFTER_INTERVALS = 10
"""At the default 3 s poll interval: 30 s, far above the longest cycle measured (about 6 s for
1,000 Job creations, README "Measured"), so only a loop that is stuck trips it."""


def _ended(name: str, task: asyncio.Task[Any]) -> str:
    if task.cancelled():
        return f"the {name} task was cancelled"
    error = task.exception()
    if error is None:
        return f"the {name} task returned"
    return f"the {name} task stopped: {type(error).__name__}: {error}"


def liveness(engine: Engine, tasks: dict[str, asyncio.Task[Any]]) -> tuple[bool, dict[str, Any]]:
    """(alive, the body to answer with)."""
    problems = [_ended(name, task) for name, task in tasks.items() if task.done()]
    if engine.stopping:
        problems.append("the controller is stopping")
    since = time.monotonic() - engine.turned_mono
    allowed = STALLED_AFTER_INTERVALS * engine.interval()
    if since > allowed:
        problems.append(
            f"the engine's loop has not come round for {since:.0f} s (allowed {allowed:.0f} s)"
        )
    return not problems, engine.health() | {"problems": problems}
