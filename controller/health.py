"""What /healthz and /readyz answer: liveness that tells the truth.

/healthz fails (503, with the reasons) when the engine task or the watch task has ended, or when
the engine's loop has not come round for `STALLED_AFTER_INTERVALS` of its own intervals (and
never sooner than `stall_floor`). A flag
set at start would stay green while a dead watch left the engine relisting once a minute, or a
hung call froze the loop; the kubelet restarts a controller whose /healthz keeps failing, which
is the cure for both. A database or API outage is not a failure here: the loop still comes
round (backing off), and a restart would not bring the database back.

The floor is 144 s at the default statement timeout and scales with it
(`AUDIOJOB_DB__STATEMENT_TIMEOUT_SECONDS`). tests/controller/test_health.py tests the stuck-loop
branch through the real /healthz handler without waiting: it sets `Engine.turned_mono` back.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from controller.store import RetryPolicy

if TYPE_CHECKING:
    from controller.engine import Engine

STALLED_AFTER_INTERVALS = 10
"""At the default 3 s poll interval: 30 s, far above the longest cycle measured (about 6 s for
1,000 Job creations, bench/README.md)."""


def stall_floor(engine: Engine) -> float:
    """Never less than twice the longest one store call may take while the database times out
    (every try at its statement timeout, plus the backoff between them: about 70 s by
    default), so an outage, which the loop rides out, does not read as a stuck loop."""
    policy = RetryPolicy()
    per_try = engine.settings.db.statement_timeout_seconds + policy.cap_seconds
    return 2 * policy.attempts * per_try


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
    allowed = max(STALLED_AFTER_INTERVALS * engine.interval(), stall_floor(engine))
    if since > allowed:
        problems.append(
            f"the engine's loop has not come round for {since:.0f} s (allowed {allowed:.0f} s)"
        )
    return not problems, engine.health() | {"problems": problems}
