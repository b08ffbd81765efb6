"""Controller settings: environment variables with the `AUDIOJOB_` prefix, plus the two names
the original app already uses (`TURSO_DATABASE_URL`, `TURSO_AUTH_TOKEN`).

Nested settings use a double underscore: `AUDIOJOB_TIMEOUTS__INGEST_SECONDS=900`.
Invalid settings stop start-up with one clear line (see `load_settings`).
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from runner.contract import MANAGED_ANNOTATIONS
from runner.payloads import JOB_TYPES
from runner.rules import ENV_ALLOWED_NETWORKS, ENV_CLUSTER_NETWORKS, NetworkRules

_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class _Section(BaseModel):
    # Attribute docstrings become field descriptions: docs/configuration.md is generated
    # from them (controller/settings_doc.py), so the code and the reference cannot drift.
    model_config = ConfigDict(use_attribute_docstrings=True)


class DbSettings(_Section):
    """Where the job table lives and how patiently to talk to it."""

    url: str = "file:audiojobs.db"
    """libSQL URL: `file:` (SQLite file, the default), `libsql://` or `https://` (Turso or sqld
    over TLS, Hrana over HTTP), `http://` (a local sqld), `wss://`/`ws://` (the same host's
    HTTP endpoint)."""

    auth_token: SecretStr | None = None
    """Turso auth token. A secret: never logged, never in a repr or an error message."""

    table: str = "audio_jobs"
    """Name of the job table; the attempts and workers tables are named after it."""

    statement_timeout_seconds: float = 10.0
    """Deadline for one database call, in seconds; a call past it counts as a transient fault."""

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        schemes = ("file:", "libsql://", "wss://", "ws://", "https://", "http://")
        if not url.startswith(schemes):
            shown = url.split("://", 1)[0] if "://" in url else url[:20]
            raise ValueError(f"must start with one of {', '.join(schemes)} (got {shown!r})")
        return url

    @field_validator("table")
    @classmethod
    def _safe_table(cls, table: str) -> str:
        if not _TABLE_NAME.match(table):
            raise ValueError("must be a plain SQL identifier (letters, digits, underscore)")
        return table


class TimeoutSettings(_Section):
    """Clocks per job type (docs/architecture.md, "What decides an outcome"); in seconds."""

    ingest_seconds: int = Field(10 * 60, gt=0)
    """Run timeout for ingest jobs: the Job's `activeDeadlineSeconds`, which Kubernetes
    enforces with or without a controller."""
    preview_seconds: int = Field(5 * 60, gt=0)
    """Run timeout for preview jobs."""
    save_seconds: int = Field(15 * 60, gt=0)
    """Run timeout for save jobs."""
    pending_seconds: int = Field(5 * 60, gt=0)
    """How long a pod may wait to start (Pending, unschedulable) before the row fails."""
    heartbeat_stale_seconds: int = Field(60, gt=0)
    """A running pod whose runner heartbeat is older than this is deleted, then retried."""
    progress_stalled_seconds: int = Field(5 * 60, gt=0)
    """A running pod that heartbeats without progress for this long is treated as stuck."""
    cancel_grace_seconds: int = Field(5, ge=0)
    """SIGTERM → SIGKILL grace for cancelled jobs (`terminationGracePeriodSeconds`)."""
    retry_backoff_seconds: float = Field(10.0, ge=0)
    """Delay before a transient failure's retry becomes claimable (`run_after`)."""

    def run_timeout(self, job_type: str) -> int:
        return int(getattr(self, f"{job_type}_seconds"))


class Resources(_Section):
    """Container resources for one job type, in Kubernetes quantity strings."""

    cpu_request: str = "250m"
    """CPU request of the runner container."""
    memory_request: str = "256Mi"
    """Memory request of the runner container."""
    cpu_limit: str | None = "2"
    """CPU limit of the runner container (`None`: no limit)."""
    memory_limit: str | None = "1Gi"
    """Memory limit of the runner container (`None`: no limit); a job past it fails as
    OOMKilled, naming it."""

    def as_k8s(self) -> dict[str, dict[str, str]]:
        requests = {"cpu": self.cpu_request, "memory": self.memory_request}
        limits = {k: v for k, v in (("cpu", self.cpu_limit), ("memory", self.memory_limit)) if v}
        return {"requests": requests, "limits": limits} if limits else {"requests": requests}


class RunnerSettings(_Section):
    """What the job pods look like."""

    image: str = "audiojob-operator:0.1.0"
    """Image with ffmpeg, yt-dlp and this project (one image serves controller and runner)."""
    image_pull_policy: str = "IfNotPresent"
    """`imagePullPolicy` of job pods."""
    service_account: str = "audiojob-runner"
    """Service account of job pods: may patch only its own pod's progress annotations."""
    output: str = "/data/output"
    """Where results go (`AUDIOJOB_OUTPUT`): a directory in the pod, or s3://bucket/prefix."""
    output_volume_claim: str | None = None
    """PVC mounted at `output` in job pods, if outputs go to a volume."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node selector of job pods, as JSON (`{"pool": "audio"}`)."""
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    """Tolerations of job pods, as a JSON list of pod-spec tolerations."""
    affinity: dict[str, Any] = Field(default_factory=dict)
    """Affinity of job pods, as a JSON pod-spec `affinity` (`nodeAffinity`, `podAffinity`,
    `podAntiAffinity`)."""
    resources: dict[str, Resources] = Field(
        default_factory=lambda: {str(t): Resources() for t in JOB_TYPES}
    )
    """Container resources per job type, as JSON: `{"ingest": {"cpu_request": "250m",
    "memory_request": "256Mi", "cpu_limit": "2", "memory_limit": "1Gi"}, …}`; a type missing
    here gets those defaults, and a limit of `null` is no limit."""
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    """Extra annotations on job pods (the tests use this to steer simulated kwok pods)."""
    ttl_seconds_after_finished: int = Field(10 * 60, ge=0)
    """Set on a finished Job only after its outcome is recorded in the row."""
    allowed_networks: str = ""
    """Comma-separated CIDRs, addresses and host:port that jobs may fetch from although they
    are not public (e.g. an in-cluster MinIO). Applied at claim to literal addresses and given
    to job pods as `AUDIOJOB_ALLOWED_NETWORKS` (see `runner/rules.py`). Default: none."""
    cluster_networks: str = ""
    """Comma-separated CIDRs of the cluster's pod and service networks, refused like private
    ranges even where they are public addresses; given to pods as `AUDIOJOB_CLUSTER_NETWORKS`."""

    @field_validator("pod_annotations")
    @classmethod
    def _not_managed(cls, value: dict[str, str]) -> dict[str, str]:
        taken = sorted(MANAGED_ANNOTATIONS & set(value))
        if taken:
            raise ValueError(
                f"{', '.join(taken)} is set by the controller to tie a pod to its row; "
                "remove it from the extra pod annotations"
            )
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _allowed(cls, value: str) -> str:
        NetworkRules.parse(allowed=value)
        return value

    @field_validator("cluster_networks")
    @classmethod
    def _cluster(cls, value: str) -> str:
        NetworkRules.parse(cluster=value)
        return value

    @property
    def network_rules(self) -> NetworkRules:
        return NetworkRules.parse(self.allowed_networks, self.cluster_networks)

    def network_env(self) -> dict[str, str]:
        """The rules as the runner reads them."""
        return {
            ENV_ALLOWED_NETWORKS: self.allowed_networks,
            ENV_CLUSTER_NETWORKS: self.cluster_networks,
        }

    def resources_for(self, job_type: str) -> Resources:
        return self.resources.get(job_type, Resources())


class KubeSettings(_Section):
    """Where the Jobs go and how hard the controller may press the API server."""

    namespace: str = "audiojob-jobs"
    """Namespace the Jobs are created in (the chart's jobs namespace)."""
    write_concurrency: int = Field(16, ge=1, le=256)
    """At most this many Kubernetes writes (Job creates, deletes, TTL patches, Events) in
    flight at once: enough to keep up with a full claim batch, gentle on the API server's
    max-in-flight limit (400 by default, shared with every other client)."""
    credential_refresh_seconds: float = Field(60.0, gt=0)
    """How often a kubeconfig's exec-plugin token is checked and, once it is within 5 min of
    its expiry (or has none), renewed by running the plugin again, in the background
    (`kubernetes.aio.config.refresh_token`; its default of 60 s). In a pod the service-account
    token is re-read every minute by the library itself."""

    @field_validator("namespace")
    @classmethod
    def _dns_label(cls, ns: str) -> str:
        if len(ns) > 63 or not _K8S_NAME.match(ns):
            raise ValueError("must be a DNS label (lowercase letters, digits, '-', ≤ 63 chars)")
        return ns


class ClaimSettings(_Section):
    """How often the controller claims, heartbeats and reconciles, and how much it runs."""

    poll_interval_seconds: float = Field(3.0, gt=0)
    """How often the claim loop looks for pending rows (the original worker's 3 s)."""
    max_concurrent: int = Field(10, ge=1, le=10_000)
    """At most this many rows in `processing` for this controller at once."""
    reconcile_interval_seconds: float = Field(60.0, gt=0)
    """Full relist of Jobs and rows, so a silently stalled watch cannot strand work."""
    heartbeat_interval_seconds: float = Field(5.0, gt=0)
    """How often running rows get their heartbeat/stage/progress statement."""
    cancel_check_interval_seconds: float = Field(0.5, gt=0)
    """While jobs run, how often the controller looks for rows the app cancelled, so a cancel
    stops its pod within about a second. One statement on an index that reads no row while
    nothing is cancelled (Turso bills rows read, not statements); none while nothing runs."""
    worker_heartbeat_seconds: float = Field(30.0, gt=0)
    """How often this instance's row in the workers table is refreshed."""


class OwnershipSettings(_Section):
    """Which controller may act on which rows (docs/architecture.md, "Ownership")."""

    lease_seconds: float = Field(15.0, gt=0)
    """Leader election within one installation: a standby takes the Kubernetes Lease over when
    its holder has not renewed it for this long (client-go's default)."""
    renew_deadline_seconds: float = Field(10.0, gt=0)
    """A leader that could not renew its Lease for this long stops acting, before the Lease can
    expire for a standby; must be shorter than `lease_seconds`."""
    retry_period_seconds: float = Field(2.0, gt=0)
    """How often the Lease is renewed, or tried by a standby."""
    owner_lease_seconds: float = Field(2 * 60, gt=0)
    """Across installations: one whose row in the workers table is older than this (by the
    database's clock) is dead, and its rows may be taken over after their run deadline."""
    takeover_interval_seconds: float = Field(10.0, gt=0)
    """How often the leader looks for a dead installation's rows it may take over: one cheap
    statement (the workers table only, while every installation is alive), so a dead one's
    rows are taken soon after they become eligible, not only at the reconcile interval."""
    takeover_margin_seconds: int = Field(60, ge=0)
    """Added to a row's run deadline before a takeover: clock skew between a claimer and the
    database, and the Job controller's delay in enforcing `activeDeadlineSeconds`."""

    @model_validator(mode="after")
    def _ordered(self) -> OwnershipSettings:
        if not self.retry_period_seconds < self.renew_deadline_seconds < self.lease_seconds:
            raise ValueError(
                "needs retry_period_seconds < renew_deadline_seconds < lease_seconds, so a "
                "leader stops acting before its Lease can expire for a standby"
            )
        return self


class RetentionSettings(_Section):
    """Deleting finished rows after a while (docs/job-table.md, "Retention"); off unless
    `finished_days`."""

    finished_days: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Keep finished rows (complete, failed, cancelled and finalized) and their attempts-ledger
    rows for this many days after `finished_at`, then delete them. Unset (the default): keep
    them forever, as before; the web app may be showing that history."""
    batch_rows: int = Field(500, ge=1, le=10_000)
    """Rows deleted per statement: small, so a batch holds the database's write lock only
    briefly and a claim waits for one batch at most."""
    interval_seconds: float = Field(10 * 60, gt=0)
    """How often the leader prunes (each run deletes batches until none is left), in seconds;
    a run that meets a database outage is skipped and tried again after this long."""


DEFAULT_COUNT_CAP = 1_000


class MetricsSettings(_Section):
    """The controller's HTTP endpoint and the queue counts."""

    port: int = Field(8080, ge=0, le=65535)
    """Port for /metrics, /healthz and /readyz (0 = pick a free port, for tests)."""
    host: str = "0.0.0.0"  # noqa: S104  # a pod's probes and Prometheus reach it from outside
    """Address /metrics, /healthz and /readyz listen on."""
    queue_count_cap: int = Field(DEFAULT_COUNT_CAP, gt=0)
    """The queue gauges (queue-metrics' `/queue` for KEDA, `audiojob_queue_*`) count pending and
    in-flight rows up to this many each, then stay there: hosted Turso bills every row a count
    reads, and it runs on every KEDA poll and scrape. KEDA only needs "is there work"; a gauge
    at the cap means "at least this many"."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUDIOJOB_",
        env_nested_delimiter="__",
        extra="ignore",
        populate_by_name=True,
        use_attribute_docstrings=True,
    )

    db: DbSettings = Field(default_factory=DbSettings)
    kube: KubeSettings = Field(default_factory=KubeSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    claim: ClaimSettings = Field(default_factory=ClaimSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    ownership: OwnershipSettings = Field(default_factory=OwnershipSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    installation: str | None = Field(None, min_length=1, max_length=200)
    """This installation's identity: `claimed_by` of its rows, its id in the workers table, the
    name of its Lease (default: `audiojob-operator.<jobs namespace>`, the chart's default
    release name; controllers with the same identity elect one leader)."""
    log_level: str = "INFO"
    """Log level of the JSON log: DEBUG, INFO, WARNING or ERROR."""

    @property
    def installation_id(self) -> str:
        return self.installation or f"audiojob-operator.{self.kube.namespace}"

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> Settings:
        if self.ownership.owner_lease_seconds < 2 * self.claim.worker_heartbeat_seconds:
            raise ValueError(
                "ownership.owner_lease_seconds must be at least twice "
                "claim.worker_heartbeat_seconds, or one late heartbeat would look like death"
            )
        return self


def _env_db_overrides() -> dict[str, Any]:
    """The original app's variable names, read outside the prefix."""
    out: dict[str, Any] = {}
    if "TURSO_DATABASE_URL" in os.environ:
        out["url"] = os.environ["TURSO_DATABASE_URL"]
    if "TURSO_AUTH_TOKEN" in os.environ:
        out["auth_token"] = os.environ["TURSO_AUTH_TOKEN"]
    return out


class SettingsError(SystemExit):
    """Raised with a one-line message; exits start-up with status 2."""


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, or raise SettingsError with one clear line."""
    try:
        settings = Settings(**overrides)
        db_env = _env_db_overrides()
        if db_env:
            merged = settings.db.model_dump() | {"auth_token": settings.db.auth_token} | db_env
            settings = settings.model_copy(update={"db": DbSettings.model_validate(merged)})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        env = "AUDIOJOB_" + where.upper().replace(".", "__")
        if where.startswith("db.url") or where == "url":
            env = "TURSO_DATABASE_URL"
        more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
        raise SettingsError(f"invalid setting {env}: {first['msg']}{more}") from None
    return settings
