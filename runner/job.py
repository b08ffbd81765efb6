"""One job as the runner sees it: identity and settings from the environment, plus the
things every pipeline uses (scratch dir, output location, progress)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from runner.contract import (
    ENV_ATTEMPT,
    ENV_ID,
    ENV_OUTPUT,
    ENV_PAYLOAD,
    ENV_TRACE_ID,
    ENV_TYPE,
    TERMINATION_LOG,
)
from runner.errors import PermanentError
from runner.outputs import DirectoryLocation, S3Location
from runner.progress import Progress
from runner.rules import NetworkRules
from runner.signals import DEFAULT_GRACE_SECONDS

# Runner-only settings, beyond the controller's contract; all optional (docs/configuration.md).
ENV_GRACE = "AUDIOJOB_GRACE_SECONDS"  # the pod's terminationGracePeriodSeconds
ENV_MAX_DOWNLOAD_BYTES = "AUDIOJOB_MAX_DOWNLOAD_BYTES"
ENV_SOCKET_TIMEOUT = "AUDIOJOB_SOCKET_TIMEOUT"
ENV_TERMINATION_LOG = "AUDIOJOB_TERMINATION_LOG"  # for running outside a pod

T = TypeVar("T", int, float)

DEFAULT_OUTPUT = "/data"
DEFAULT_MAX_DOWNLOAD_BYTES = 2 * 1024**3  # 2 GiB: hours of lossless audio, not a disk-filler
DEFAULT_SOCKET_TIMEOUT = 20.0  # seconds without a byte before yt-dlp gives up on a read


@dataclass(frozen=True)
class JobEnv:
    job_id: str
    job_type: str
    attempt: int
    trace_id: str
    payload: str
    output: str
    grace_seconds: float
    max_download_bytes: int
    socket_timeout: float
    termination_log: Path
    network_rules: NetworkRules

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> JobEnv:
        env = os.environ if env is None else env
        try:
            rules = NetworkRules.from_env(env)
        except ValueError as e:
            raise PermanentError(f"{e} (permanent)") from None
        return cls(
            job_id=env.get(ENV_ID, "") or "unnamed",
            job_type=env.get(ENV_TYPE, ""),
            attempt=_number(env, ENV_ATTEMPT, 1, int),
            trace_id=env.get(ENV_TRACE_ID, "") or "-",
            payload=env.get(ENV_PAYLOAD, ""),
            output=env.get(ENV_OUTPUT, "") or DEFAULT_OUTPUT,
            grace_seconds=_number(env, ENV_GRACE, DEFAULT_GRACE_SECONDS, float),
            max_download_bytes=_number(
                env, ENV_MAX_DOWNLOAD_BYTES, DEFAULT_MAX_DOWNLOAD_BYTES, int
            ),
            socket_timeout=_number(env, ENV_SOCKET_TIMEOUT, DEFAULT_SOCKET_TIMEOUT, float),
            termination_log=Path(env.get(ENV_TERMINATION_LOG, "") or TERMINATION_LOG),
            network_rules=rules,
        )

    @property
    def file_stem(self) -> str:
        """The job id as a file name; ids with other characters get a hash to stay unique."""
        clean = re.sub(r"[^A-Za-z0-9._-]+", "-", self.job_id).strip(".-")[:80]
        if clean == self.job_id:
            return clean
        digest = hashlib.sha256(self.job_id.encode()).hexdigest()[:10]
        return f"{clean or 'job'}-{digest}"


@dataclass(frozen=True)
class Workspace:
    env: JobEnv
    scratch: Path
    location: DirectoryLocation | S3Location
    progress: Progress

    def output_key(self, output_name: str | None, suffix: str, extension: str) -> str:
        return output_name or f"{self.env.file_stem}{suffix}.{extension}"


def _number(env: Mapping[str, str], name: str, default: T, kind: type[T]) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise PermanentError(f"{name}={raw[:40]!r} is not a number") from None
    if value <= 0:
        raise PermanentError(f"{name}={raw[:40]!r} must be positive")
    return value
