-- audiojob-operator job store, schema version 2.
--
-- The controller applies this itself and records the version in audio_job_meta (never in
-- PRAGMA user_version, which belongs to the app and which hosted Turso refuses); the web app may
-- apply it as-is with any SQLite/libSQL client. Every statement is idempotent. Times are epoch
-- ms (UTC).
-- With a table name other than audio_jobs, the controller renames audio_jobs -> <table> and
-- audio_job_* -> <table without trailing s>_*.

CREATE TABLE IF NOT EXISTS audio_jobs (
  job_id      TEXT PRIMARY KEY NOT NULL,
  type        TEXT NOT NULL,
  status      TEXT NOT NULL DEFAULT 'pending'
              CHECK (status IN ('pending', 'processing', 'complete', 'failed', 'cancelled')),
  payload     TEXT NOT NULL DEFAULT '{}',
  priority    INTEGER NOT NULL DEFAULT 0,
  stage       TEXT,
  progress    INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
  attempt     INTEGER NOT NULL DEFAULT 0,
  retry_count INTEGER NOT NULL DEFAULT 0,
  max_retries INTEGER NOT NULL DEFAULT 1,
  run_after   INTEGER,
  result      TEXT,
  error       TEXT,
  error_kind  TEXT
              CHECK (error_kind IS NULL
                     OR error_kind IN ('transient', 'permanent', 'timeout', 'lost', 'cancelled')),
  claimed_by  TEXT,
  k8s_job     TEXT,
  trace_id    TEXT,
  created_at  INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
  updated_at  INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
  started_at  INTEGER,
  finished_at INTEGER,
  run_deadline INTEGER
);
-- run_deadline (version 2): while processing, when this attempt's pod can no longer run (the
-- database's clock), written by its claimer; another installation takes the row over only
-- after it.

-- Claiming reads this index in order and stops after LIMIT rows; counting pending rows reads only
-- its entries. Partial, so finished history (the bulk of the table) costs nothing: Turso bills
-- every row a statement reads.
CREATE INDEX IF NOT EXISTS audio_job_ix_pending
  ON audio_jobs (status, priority DESC, created_at, run_after) WHERE status = 'pending';

-- Adopting after a restart, takeovers and the in-flight count.
CREATE INDEX IF NOT EXISTS audio_job_ix_processing
  ON audio_jobs (status, updated_at) WHERE status = 'processing';

-- Cancelled rows whose pod the controller has not yet confirmed gone; in-flight for KEDA.
CREATE INDEX IF NOT EXISTS audio_job_ix_cancel_open
  ON audio_jobs (status, finished_at, updated_at) WHERE status = 'cancelled' AND finished_at IS NULL;

-- Retention (AUDIOJOB_RETENTION__FINISHED_DAYS): the oldest finished rows, in the order they are
-- deleted, so each small batch reads only the rows it deletes, never the rest of the history.
CREATE INDEX IF NOT EXISTS audio_job_ix_finished
  ON audio_jobs (finished_at)
  WHERE status IN ('complete', 'failed', 'cancelled') AND finished_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS audio_job_attempts (
  job_id     TEXT NOT NULL,
  attempt    INTEGER NOT NULL,
  pod        TEXT,
  node       TEXT,
  started_at INTEGER,
  ended_at   INTEGER,
  exit_code  INTEGER,
  reason     TEXT,
  PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audio_job_workers (
  worker_id  TEXT PRIMARY KEY NOT NULL,
  version    TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  last_seen  INTEGER NOT NULL,
  active     INTEGER NOT NULL DEFAULT 0,
  longest_run_ms INTEGER
);
-- longest_run_ms (version 2): the longest run deadline this installation gives an attempt.

-- The store's own bookkeeping: key 'schema_version' holds the version this file describes.
CREATE TABLE IF NOT EXISTS audio_job_meta (
  key   TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL
);
