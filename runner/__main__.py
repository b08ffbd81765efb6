"""`python -m runner` / `audiojob-runner`: run the one job described by the environment.

Every exit path ends the same way: children killed, scratch removed, the termination
message written, and the exit code of the contract (0, 65, 75, 143; docs/runner.md).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from runner import procs, signals
from runner.contract import (
    EXIT_OK,
    EXIT_PERMANENT,
    EXIT_TERMINATED,
    FailureMessage,
    SuccessMessage,
    TerminationMessage,
    encode_termination_message,
)
from runner.errors import RunnerError, Terminated
from runner.ingest import run_ingest
from runner.job import ENV_TERMINATION_LOG, JobEnv, Workspace
from runner.outputs import open_location
from runner.payloads import IngestPayload, PayloadError, parse_payload
from runner.progress import Progress
from runner.render import run_render
from runner.reporter import make_reporter

log = logging.getLogger("runner")


def run_job(env: JobEnv, ws: Workspace) -> dict[str, Any]:
    payload = parse_payload(env.job_type, env.payload, rules=env.network_rules)
    if isinstance(payload, IngestPayload):
        return run_ingest(payload, ws)
    return run_render(payload, ws)


def execute(env: JobEnv) -> tuple[TerminationMessage, int]:
    """Run the job and decide what the controller is told; never raises."""
    progress = Progress()
    with procs.shielded():  # a SIGTERM now waits for the checkpoint, so nothing set up leaks
        reporter = make_reporter(progress)
        reporter.start()
        scratch = Path(tempfile.mkdtemp(prefix="audiojob-"))
    try:
        procs.checkpoint()
        location = open_location(env.output)
        ws = Workspace(env=env, scratch=scratch, location=location, progress=progress)
        result = run_job(env, ws)
        progress.finish()
        return SuccessMessage(ok=True, result=result), EXIT_OK
    except Terminated:
        stage = progress.state.stage
        text = (
            f"the runner was stopped by SIGTERM during {stage} (cancelled, past its deadline "
            "or evicted); partial output was discarded (transient)"
        )
        return FailureMessage(ok=False, error=text, kind="transient"), EXIT_TERMINATED
    except PayloadError as e:
        # The very sentence the controller writes when it refuses the row at claim.
        return FailureMessage(ok=False, error=str(e), kind="permanent"), EXIT_PERMANENT
    except RunnerError as e:
        return FailureMessage(ok=False, error=e.sentence, kind=e.kind), e.exit_code
    except Exception as e:
        log.exception("unexpected failure")
        text = f"the runner failed unexpectedly: {type(e).__name__}: {e}; this is a bug (permanent)"
        return FailureMessage(ok=False, error=text, kind="permanent"), EXIT_PERMANENT
    finally:
        with procs.shielded():
            procs.kill_all_and_wait()
            shutil.rmtree(scratch, ignore_errors=True)
            reporter.stop()


def write_termination_message(message: TerminationMessage, path: Path) -> None:
    data = encode_termination_message(message)
    try:
        path.write_bytes(data)
    except OSError as e:
        log.warning("could not write the termination message to %s: %s", path, e)
    # Also on stdout, the runner's only stdout line: for people and for `kubectl logs`.
    sys.stdout.write(data.decode() + "\n")
    sys.stdout.flush()


def configure_logging(env: JobEnv) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s %(name)s jobId={env.job_id} traceId={env.trace_id} "
            f"attempt={env.attempt} %(message)s"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def main() -> NoReturn:
    try:
        env = JobEnv.from_environ()
    except RunnerError as e:
        # Without a valid environment there is no job; the default path still tells the kubelet.
        # (A termination log set for a run outside a pod is still honoured.)
        fallback = JobEnv.from_environ(
            {ENV_TERMINATION_LOG: os.environ.get(ENV_TERMINATION_LOG, "")}
        )
        write_termination_message(
            FailureMessage(ok=False, error=f"{e} (permanent)", kind="permanent"),
            fallback.termination_log,
        )
        sys.exit(EXIT_PERMANENT)
    configure_logging(env)
    signals.install(env.grace_seconds)
    log.info("starting %s job", env.job_type or "untyped")
    try:
        message, code = execute(env)
    except Terminated:
        # SIGTERM landed where `execute` could not turn it into a message (its very start,
        # or while it was building one); cleanup has run in its `finally` either way.
        message = FailureMessage(
            ok=False,
            error="the runner was stopped by SIGTERM; partial output was discarded (transient)",
            kind="transient",
        )
        code = EXIT_TERMINATED
    with procs.shielded():
        if isinstance(message, FailureMessage):
            log.warning("failed: %s", message.error)
        else:
            log.info("finished")
        write_termination_message(message, env.termination_log)
    sys.exit(code)


if __name__ == "__main__":
    main()
