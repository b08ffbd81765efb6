"""Leader election within one installation, the way client-go's leaderelection does it: a
`coordination.k8s.io/v1` Lease in the jobs namespace, written with optimistic concurrency.

Expiry is judged by this process's monotonic clock, never by the `renewTime` stamped in the
Lease: a standby notes when it last saw the Lease record change and takes it only after
`lease_seconds` without a change, so no wall clock (ours, the holder's, the API server's) can
make it take a live holder's Lease. The holder stops acting when it could not renew for
`renew_deadline_seconds`, which is shorter than `lease_seconds`.

Why not `kubernetes.aio.leaderelection` (37.0.1), read in its source: it keeps none of the three
guarantees the engine relies on.
  - A leader that cannot renew keeps acting past the point a standby takes over. Its renew
    deadline restarts at each round (`timeout = now + renew_deadline` after every sleep, so
    retry_period + renew_deadline after the last renewal, not renew_deadline), a renewal
    request has no timeout of its own (the client's default is 5 min) and the leading task is
    cancelled only when the renew loop returns: a black-holed API server leaves the old leader
    claiming for minutes while a standby leads after `lease_duration`. Here `acting()` is a
    pure function of the monotonic clock and the last renewal, true for at most
    renew_deadline after it, whatever a request is doing.
  - A clean exit does not hand over: there is no release (client-go's ReleaseOnCancel), so a
    standby waits the whole lease out; `release()` here clears the holder at once.
  - Its deadlines use `time.time()`, so a wall-clock step moves them; every retry, renew and
    lease duration must be ≥ 1 s, and a lost optimistic-concurrency race (409) is logged as
    an ERROR with a traceback.
"Not ready while standing by" is the engine's (engine.loop), with either.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from controller.kube import Kube, KubeError
from controller.names import job_key
from controller.settings import OwnershipSettings
from runner import contract as c

log = logging.getLogger("audiojob.leader")
LEASE_LABELS = {c.LABEL_MANAGED_BY: c.LABEL_MANAGED_BY_VALUE}


def lease_name(installation: str) -> str:
    """A valid object name for the installation's Lease."""
    return f"audiojob-{job_key(installation)}"


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leader:
    def __init__(
        self,
        *,
        kube: Kube,
        settings: OwnershipSettings,
        installation: str,
        holder: str,
        on_change: Callable[[bool], None],
    ) -> None:
        self._kube = kube
        self._settings = settings
        self.name = lease_name(installation)
        self.holder = holder
        self._on_change = on_change
        self.is_leader = False
        self._renewed_mono = float("-inf")
        self._observed: tuple[Any, ...] | None = None
        self._observed_mono = float("-inf")
        self._stopping = False

    def acting(self) -> bool:
        """Leader, and renewed recently enough that no standby can have taken over."""
        return (
            self.is_leader
            and time.monotonic() - self._renewed_mono < self._settings.renew_deadline_seconds
        )

    async def run(self) -> None:
        while not self._stopping:
            try:
                won = await self._try_once()
            except KubeError as e:
                log.warning("could not reach the Lease %s: %s", self.name, e)
                won = False
            if won and not self.is_leader:
                self._set(True)
            elif (
                not won
                and self.is_leader
                and time.monotonic() - self._renewed_mono >= self._settings.renew_deadline_seconds
            ):
                log.warning(
                    "could not renew the Lease %s for %.0f s; stopping until it is ours again",
                    self.name,
                    self._settings.renew_deadline_seconds,
                )
                self._set(False)
            await asyncio.sleep(self._settings.retry_period_seconds)

    async def release(self) -> None:
        """On a clean exit: hand the Lease over at once instead of letting it expire."""
        self._stopping = True
        if not self.is_leader:
            return
        self._set(False)
        try:
            lease = await self._kube.get_lease(self.name)
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.holder:
                lease["spec"]["holderIdentity"] = None
                await self._kube.replace_lease(self.name, lease)
        except KubeError as e:
            log.warning("could not release the Lease %s (it expires by itself): %s", self.name, e)

    def _set(self, leader: bool) -> None:
        self.is_leader = leader
        log.info(
            "leading this installation" if leader else "standing by",
            extra={"lease": self.name, "holder": self.holder},
        )
        self._on_change(leader)

    async def _try_once(self) -> bool:
        seen = time.monotonic()
        stamp = _micro_now()
        duration = math.ceil(self._settings.lease_seconds)
        lease = await self._kube.get_lease(self.name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "labels": LEASE_LABELS},
                "spec": {
                    "holderIdentity": self.holder,
                    "leaseDurationSeconds": duration,
                    "acquireTime": stamp,
                    "renewTime": stamp,
                    "leaseTransitions": 0,
                },
            }
            return self._won(await self._kube.create_lease(body), seen)
        spec = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_mono = record, seen
        if holder != self.holder:
            if self.is_leader:
                # Someone else holds it: we were too slow to renew. Stop acting now.
                self._set(False)
            if holder and seen - self._observed_mono < self._settings.lease_seconds:
                return False
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.holder, leaseDurationSeconds=duration, renewTime=stamp)
        # Leases from before the label get it on their next write: the chart's uninstall hook
        # finds them by it.
        lease.setdefault("metadata", {}).setdefault("labels", {}).update(LEASE_LABELS)
        return self._won(await self._kube.replace_lease(self.name, lease), seen)

    def _won(self, lease: dict[str, Any] | None, seen: float) -> bool:
        if lease is None:
            return False
        spec = lease.get("spec") or {}
        self._observed = (
            spec.get("holderIdentity") or "",
            spec.get("renewTime"),
            spec.get("leaseTransitions"),
        )
        self._observed_mono = self._renewed_mono = seen
        return True
