"""`audiojob status` (also `python -m controller status`): the job table for people.

It shows live rows by status and type, the rows in flight with stage, progress and age, the
rows that finished recently and the latest failures with their sentences. It reads the same
settings as the controller (`TURSO_DATABASE_URL`/`AUDIOJOB_DB__URL`, `TURSO_AUTH_TOKEN`,
`AUDIOJOB_DB__TABLE`) through the same store, so it works wherever the controller does, and it
reads only what the census reads (controller.store.census): live rows through their indexes,
finished rows among the newest few thousand.

Exit codes: 0; 2 when the settings, the URL or the token are wrong, or (without `--watch`)
the database cannot be reached. With `--watch` an unreachable database is shown and the view
keeps refreshing until it is back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from controller.settings import DbSettings, SettingsError, load_settings
from controller.store import JobRow, JobStore, RetryPolicy, StoreError, StoreUnavailable, now_ms
from controller.store.backend import split_url
from controller.store.census import LIVE, Census

# A person is waiting: two quick tries, then say what is wrong.
RETRY = RetryPolicy(attempts=2, base_seconds=0.2, cap_seconds=0.5)
FINISHED = ("complete", "failed", "cancelled")


@dataclass(frozen=True)
class Snapshot:
    at_ms: int
    live: dict[tuple[str, str], int]
    in_flight: list[JobRow]
    recent: dict[tuple[str, str], int]
    failures: list[JobRow]
    window: int

    def as_json(self) -> dict[str, Any]:
        def counts(c: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
            return [{"status": s, "type": t, "rows": n} for (s, t), n in sorted(c.items())]

        return {
            "at_ms": self.at_ms,
            "live": counts(self.live),
            "recent": counts(self.recent),
            "recent_window_rows": self.window,
            "in_flight": [
                {
                    "job_id": r.job_id,
                    "type": r.type,
                    "attempt": r.attempt,
                    "stage": r.stage,
                    "progress": r.progress,
                    "age_seconds": age_seconds(r, self.at_ms),
                }
                for r in self.in_flight
            ],
            "failures": [
                {
                    "job_id": r.job_id,
                    "type": r.type,
                    "kind": r.error_kind,
                    "error": r.error,
                    "finished_at_ms": r.finished_at,
                }
                for r in self.failures
            ],
        }


def age_seconds(row: JobRow, now: int) -> float:
    return max(0, now - (row.started_at or row.updated_at)) / 1000


def age_text(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


async def read(census: Census, *, window: int, failures: int) -> Snapshot:
    live = await census.live()
    in_flight = await census.in_flight()
    recent = await census.recent(window, failures)
    return Snapshot(now_ms(), live, in_flight, recent.counts, recent.failures, window)


def render(snap: Snapshot) -> RenderableType:
    counts = Table(title="Rows by status and type", title_justify="left", expand=False)
    counts.add_column("type")
    for status in LIVE:
        counts.add_column(status, justify="right")
    for status in FINISHED:
        counts.add_column(f"{status}*", justify="right")
    types = sorted({t for _, t in snap.live} | {t for _, t in snap.recent})
    for t in types:
        counts.add_row(
            t,
            *(str(snap.live.get((s, t), 0)) for s in LIVE),
            *(str(snap.recent.get((s, t), 0)) for s in FINISHED),
        )
    if not types:
        counts.add_row("(no rows)", *[""] * (len(LIVE) + len(FINISHED)))
    counts.caption = f"* among the newest {snap.window:,} rows"
    counts.caption_justify = "left"

    flight = Table(title="In flight", title_justify="left")
    for col in ("job", "type", "try", "stage", "progress", "", "age"):
        flight.add_column(col, justify="right" if col in ("try", "age", "") else "left")
    for r in snap.in_flight:
        flight.add_row(
            r.job_id,
            r.type,
            str(r.attempt),
            r.stage or "starting",
            ProgressBar(total=100, completed=r.progress, width=20),
            f"{r.progress}%",
            age_text(age_seconds(r, snap.at_ms)),
        )
    if not snap.in_flight:
        flight.add_row("(none)", "", "", "", "", "", "")

    failed = Table(title="Latest failures", title_justify="left")
    for col in ("job", "type", "kind", "when", "why"):
        failed.add_column(col, overflow="fold", ratio=4 if col == "why" else None)
    for r in snap.failures:
        when = age_text((snap.at_ms - (r.finished_at or snap.at_ms)) / 1000) + " ago"
        failed.add_row(r.job_id, r.type, r.error_kind or "", when, r.error or "")
    if not snap.failures:
        failed.add_row("(none)", "", "", "", "")
    stamp = time.strftime("%H:%M:%S", time.localtime(snap.at_ms / 1000))
    return Group(Text(f"audiojob status at {stamp}", style="bold"), counts, flight, failed)


@dataclass
class Viewer:
    db: DbSettings
    window: int = 2000
    failures: int = 5
    _store: JobStore | None = field(default=None, init=False)

    async def snapshot(self) -> Snapshot:
        if self._store is None:
            self._store = await open_store(self.db)
        return await read(
            Census(self._store, self.db.table), window=self.window, failures=self.failures
        )

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()


async def open_store(db: DbSettings) -> JobStore:
    return await JobStore.open(db, retry=RETRY)


def check_file(db: DbSettings) -> None:
    """Opening a file that is not there would make an empty database and show nothing."""
    url, _ = split_url(db.url)
    if url.startswith("file:"):
        path = Path(url.removeprefix("file:").split("?", 1)[0])
        if not path.is_file():
            raise StoreError(f"database {url}: no such file ({path.resolve()})")


def unavailable(e: StoreError, since_ms: int | None) -> RenderableType:
    last = f"; last read {age_text((now_ms() - since_ms) / 1000)} ago" if since_ms else ""
    return Text(f"database unavailable, retrying: {e}{last}", style="bold red")


async def watch(viewer: Viewer, console: Console, *, interval: float) -> int:
    """Redraw in place until interrupted; an unreachable database is shown, not fatal."""
    last_ok: int | None = None
    with Live(Text("reading the job table ..."), console=console, auto_refresh=False) as live:
        while True:
            try:
                snap = await viewer.snapshot()
                last_ok = snap.at_ms
                live.update(render(snap), refresh=True)
            except StoreUnavailable as e:
                # Down, not wrong: say so and keep trying; the next read may succeed.
                live.update(unavailable(e, last_ok), refresh=True)
            await asyncio.sleep(interval)


async def watch_json(viewer: Viewer, *, interval: float) -> int:
    """One JSON object per line and refresh, for scripts; an outage is an `error` line."""
    while True:
        try:
            line = (await viewer.snapshot()).as_json()
        except StoreUnavailable as e:
            line = {"error": str(e), "at_ms": now_ms()}
        print(json.dumps(line), flush=True)
        await asyncio.sleep(interval)


async def run(args: argparse.Namespace, db: DbSettings, console: Console) -> int:
    viewer = Viewer(db, window=args.window)
    try:
        if args.watch:
            if args.output == "json":
                return await watch_json(viewer, interval=args.interval)
            return await watch(viewer, console, interval=args.interval)
        snap = await viewer.snapshot()
        if args.output == "json":
            print(json.dumps(snap.as_json(), indent=2))
        else:
            console.print(render(snap))
        return 0
    finally:
        await viewer.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="audiojob status",
        description="Show the job table: live rows, rows in flight, recent failures.",
    )
    p.add_argument("--watch", "-w", action="store_true", help="refresh in place until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (2)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument(
        "--window", type=int, default=2000, help="finished rows are read among the newest N"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """`audiojob status …`; `audiojob` alone prints usage."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "status":
        print("usage: audiojob status [--watch] [-o json] [--interval S]", file=sys.stderr)
        return 2
    args = parser().parse_args(argv[1:])
    # The store logs each retry for the controller's JSON log; here the one sentence at the
    # end (or the view's own line in --watch) says it.
    logging.getLogger("audiojob").setLevel(logging.ERROR)
    try:
        db = load_settings().db
    except SettingsError as e:
        print(f"audiojob status: {e}", file=sys.stderr)
        return 2
    console = Console()
    try:
        check_file(db)
        return asyncio.run(run(args, db, console))
    except StoreError as e:
        # Wrong URL or token, or (without --watch) no database: one sentence.
        print(f"audiojob status: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
