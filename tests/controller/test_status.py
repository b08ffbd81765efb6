"""`audiojob status` as a person runs it: a real process on file:, on the Hrana test server
(http://, libsql:// and https:// through a TLS front with its own CA), with a wrong token, and
`--watch` in tmux through an outage."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.settings import DbSettings
from controller.store import JobStore
from devcluster.controlplane import free_port
from devcluster.hrana_server import HranaServer, running_server
from devcluster.pki import make_pki
from tests.helpers import wait_for
from tests.store.test_census import seed

ROOT = Path(__file__).resolve().parents[2]


def seeded(path: Path) -> Path:
    async def go() -> None:
        async with await JobStore.open(DbSettings(url=f"file:{path}")) as store:
            await seed(store)
            await store._run(
                "UPDATE audio_jobs SET stage = 'transcoding', progress = 42 WHERE job_id = 'i3'",
                [],
                "the runner's progress",
            )

    asyncio.run(go())
    return path


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return seeded(tmp_path / "jobs.db")


@pytest.fixture
def server(db_file: Path) -> Iterator[HranaServer]:
    with running_server(str(db_file), token="the-token") as s:
        yield s


@pytest.fixture
def tls_front(server: HranaServer, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """https://127.0.0.1:<port> in front of the test server (which speaks plain HTTP), with a
    certificate from a CA of its own; yields the URL and the CA file."""
    make_pki(tmp_path / "pki")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "pki" / "apiserver.crt", tmp_path / "pki" / "apiserver.key")
    port = free_port()
    loop = asyncio.new_event_loop()
    # A pipe of bytes, so the status view's own TLS client meets a real TLS server.

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    async def client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.gather(pipe(r, uw), pipe(ur, w), return_exceptions=True)

    started = threading.Event()
    stop = asyncio.Event()

    def serve() -> None:
        async def main() -> None:
            async with await asyncio.start_server(client, "127.0.0.1", port, ssl=ctx):
                started.set()
                await stop.wait()

        loop.run_until_complete(main())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30)
    yield f"https://127.0.0.1:{port}", tmp_path / "pki" / "ca.crt"
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


def status(
    url: str, *args: str, token: str | None = None, ca: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TURSO_", "AUDIOJOB_"))}
    env |= {"TURSO_DATABASE_URL": url, "COLUMNS": "120", "PYTHONPATH": str(ROOT)}
    if ca:
        env["SSL_CERT_FILE"] = str(ca)
    if token:
        env["TURSO_AUTH_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "controller", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_table_shows_counts_rows_in_flight_and_failures(db_file: Path) -> None:
    proc = status(f"file:{db_file}")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for heading in ("Rows by status and type", "In flight", "Latest failures"):
        assert heading in out
    ingest = next(line for line in out.splitlines() if line.startswith("│ ingest"))
    assert [c.strip() for c in ingest.strip("│").split("│")] == [
        "ingest",
        "2",
        "1",
        "1",
        "1",
        "1",
        "0",
    ]
    flight = next(line for line in out.splitlines() if "│ i3 " in line)
    assert "transcoding" in flight and "42%" in flight and "━" in flight, "a drawn bar"
    assert "yt-dlp could not download https://x: HTTP 404" in out


def test_json_is_the_same_on_every_url_kind(
    db_file: Path, server: HranaServer, tls_front: tuple[str, Path]
) -> None:
    https, ca = tls_front
    outputs = []
    for url, token in (
        (f"file:{db_file}", None),
        (server.url("http"), "the-token"),
        (server.url("libsql"), "the-token"),
        (https, "the-token"),
        (https.replace("https://", "libsql://"), "the-token"),
    ):
        proc = status(url, "-o", "json", token=token, ca=ca)
        assert proc.returncode == 0, (url, proc.stderr)
        answer = json.loads(proc.stdout)
        del answer["at_ms"]
        for row in answer["in_flight"]:
            del row["age_seconds"]
        outputs.append(answer)
    assert all(o == outputs[0] for o in outputs)
    assert outputs[0]["in_flight"] == [
        {"job_id": "i3", "type": "ingest", "attempt": 1, "stage": "transcoding", "progress": 42}
    ]
    assert {"status": "pending", "type": "other", "rows": 1} in outputs[0]["live"]
    assert outputs[0]["failures"][0]["kind"] == "permanent"


@pytest.mark.parametrize("problem", ["token", "url", "file"])
def test_a_wrong_url_or_token_is_one_sentence_and_exit_2(
    problem: str, server: HranaServer, tmp_path: Path
) -> None:
    url, token = {
        "token": (server.url(), "not-the-token"),
        "url": (f"http://127.0.0.1:{server.port}/nothing-here", "the-token"),
        "file": (f"file:{tmp_path / 'typo.db'}", None),
    }[problem]
    proc = status(url, token=token)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audiojob status: "), proc.stderr
    assert "not-the-token" not in proc.stderr
    assert {"token": "authentication failed", "url": "database", "file": "no such file"}[
        problem
    ] in lines[0]


def tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


@pytest.fixture
def session() -> Iterator[str]:
    assert shutil.which("tmux"), "tmux is needed (apt-get install tmux)"
    name = f"audiojob-status-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], check=False, capture_output=True)


def test_watch_refreshes_in_place_and_rides_out_an_outage(
    server: HranaServer, session: str, db_file: Path
) -> None:
    command = (
        f"cd {ROOT} && TURSO_DATABASE_URL={server.url()} TURSO_AUTH_TOKEN=the-token"
        f" {sys.executable} -m controller status --watch --interval 0.3"
    )
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "50", command)

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", session)

    wait_for(lambda: "│ i3 " in screen(), timeout=60, message="the first view")
    server.faults.http_status(503, count=10_000)
    down = wait_for(
        lambda: (s := screen()) and "database unavailable, retrying" in s and s,
        timeout=60,
        message="the outage shown",
    )
    assert "last read" in down
    server.faults.clear()
    asyncio.run(_finish_i3(db_file))
    back = wait_for(
        lambda: (s := screen()) and "│ i3 " not in s and "In flight" in s and s,
        timeout=60,
        message="the view back, with i3 no longer in flight",
    )
    assert back.count("audiojob status at") == 1, "refreshed in place, not scrolled"
    assert "database unavailable" not in back


async def _finish_i3(path: Path) -> None:
    async with await JobStore.open(DbSettings(url=f"file:{path}")) as store:
        await store._run(
            "UPDATE audio_jobs SET status = 'complete', finished_at = 1 WHERE job_id = 'i3'",
            [],
            "complete i3",
        )


def test_watch_json_is_one_object_per_refresh_and_an_error_line_while_down(
    server: HranaServer,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TURSO_", "AUDIOJOB_"))}
    env |= {"TURSO_DATABASE_URL": server.url(), "TURSO_AUTH_TOKEN": "the-token"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller",
            "status",
            "--watch",
            "-o",
            "json",
            "--interval",
            "0.2",
        ],
        env=env | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[dict[str, object]] = []
    reader = threading.Thread(
        target=lambda: lines.extend(json.loads(line) for line in proc.stdout or []), daemon=True
    )
    reader.start()
    try:
        wait_for(lambda: any("live" in line for line in lines), timeout=60, message="a snapshot")
        server.faults.http_status(503, count=10_000)
        wait_for(lambda: "error" in lines[-1], timeout=60, message="an error line")
        assert "database" in str(lines[-1]["error"])
        server.faults.clear()
        wait_for(lambda: "live" in lines[-1], timeout=60, message="snapshots again")
    finally:
        proc.terminate()
        proc.wait(30)
        reader.join(30)
