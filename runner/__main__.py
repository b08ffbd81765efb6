"""`python -m runner` / `audiojob-runner`: run the one job described by the environment.

Every exit path ends the same way: children killed, scratch removed, the termination
message written, and the exit code of the contract (0, 65, 75, 143; docs/runner.md).
"""

from __future__ import annotations

import gc

# Run as the program (`python -m runner`, the pod's command): no cyclic collection while it
# starts. Its imports, pydantic's above all, allocate enough to set off dozens of collections
# over objects that live as long as the process: ~30 ms of CPU, about a tenth of its start
# and 0.4% of plain ffmpeg's CPU on a 10-minute file (bench/bench_runner.py). `run_job`
# resumes collection once the job's pipeline is imported. Imported as a module (the console
# script, tests), the collector is left alone.
if __name__ == "__main__":
    gc.disable()

import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from runner import ffmpeg, procs, signals
from runner.contract import EXIT_OK, EXIT_PERMANENT, EXIT_TERMINATED, ErrorKind
from runner.errors import PayloadError, RunnerError, Terminated
from runner.job import ENV_TERMINATION_LOG, JobEnv, Workspace
from runner.outputs import DirectoryLocation, open_location
from runner.progress import Progress
from runner.reporter import make_reporter
from runner.rules import path_refusal

if TYPE_CHECKING:
    from runner.messages import TerminationMessage

# Nothing imported above imports pydantic (~0.3 s of the runner's start on a busy machine):
# the payload's models and the termination message's come after the first ffprobe has started.

log = logging.getLogger("runner")


def run_job(env: JobEnv, ws: Workspace) -> dict[str, Any]:
    from runner.payloads import IngestPayload, parse_payload  # noqa: PLC0415

    payload = parse_payload(env.job_type, env.payload, rules=env.network_rules)
    # Each pipeline is imported when its job runs: a render does not pay for the download's.
    if isinstance(payload, IngestPayload):
        from runner.ingest import run_ingest  # noqa: PLC0415

        resume_collection()
        return run_ingest(payload, ws)
    from runner.render import run_render  # noqa: PLC0415

    resume_collection()
    return run_render(payload, ws)


def resume_collection() -> None:
    """Collect cycles again, if the start turned collection off; what the start allocated is
    frozen out of every later collection (it lives as long as the process)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def probe_input_early(env: JobEnv, ws: Workspace) -> None:
    """Start ffprobe on a render's input before the payload is validated, so it runs while
    pydantic is imported; the render's own probe of the same file takes its answer. Only a
    plain file in the output directory whose key passes the same path rule as the payload;
    anything else waits for the validated payload as before."""
    if env.job_type not in ("preview", "save") or not isinstance(ws.location, DirectoryLocation):
        return
    try:
        ref = json.loads(env.payload or "{}").get("input")
    except (ValueError, AttributeError, RecursionError):
        return
    if not isinstance(ref, str) or ref.startswith("s3://") or path_refusal(ref) is not None:
        return
    path = ws.location.root / ref
    if path.is_file():
        ffmpeg.start_probe(path)


def succeeded(result: dict[str, Any]) -> TerminationMessage:
    from runner.messages import SuccessMessage  # noqa: PLC0415

    return SuccessMessage(ok=True, result=result)


def failed(error: str, kind: ErrorKind) -> TerminationMessage:
    from runner.messages import FailureMessage  # noqa: PLC0415

    return FailureMessage(ok=False, error=error, kind=kind)


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
        probe_input_early(env, ws)
        result = run_job(env, ws)
        progress.finish()
        return succeeded(result), EXIT_OK
    except Terminated:
        stage = progress.state.stage
        text = (
            f"the runner was stopped by SIGTERM during {stage} (cancelled, past its deadline "
            "or evicted); partial output was discarded (transient)"
        )
        return failed(text, "transient"), EXIT_TERMINATED
    except PayloadError as e:
        # The very sentence the controller writes when it refuses the row at claim.
        return failed(str(e), "permanent"), EXIT_PERMANENT
    except RunnerError as e:
        return failed(e.sentence, e.kind), e.exit_code
    except Exception as e:
        log.exception("unexpected failure")
        text = f"the runner failed unexpectedly: {type(e).__name__}: {e}; this is a bug (permanent)"
        return failed(text, "permanent"), EXIT_PERMANENT
    finally:
        with procs.shielded():
            procs.kill_all_and_wait()
            shutil.rmtree(scratch, ignore_errors=True)
            reporter.stop()


def write_termination_message(message: TerminationMessage, path: Path) -> None:
    from runner.messages import encode_termination_message  # noqa: PLC0415

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
        write_termination_message(failed(f"{e} (permanent)", "permanent"), fallback.termination_log)
        sys.exit(EXIT_PERMANENT)
    configure_logging(env)
    signals.install(env.grace_seconds)
    log.info("starting %s job", env.job_type or "untyped")
    try:
        message, code = execute(env)
    except Terminated:
        # SIGTERM landed where `execute` could not turn it into a message (its very start,
        # or while it was building one); cleanup has run in its `finally` either way.
        message = failed(
            "the runner was stopped by SIGTERM; partial output was discarded (transient)",
            "transient",
        )
        code = EXIT_TERMINATED
    with procs.shielded():
        if not message.ok:
            log.warning("failed: %s", message.error)
        else:
            log.info("finished")
        write_termination_message(message, env.termination_log)
    sys.exit(code)


if __name__ == "__main__":
    main()
