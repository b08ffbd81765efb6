// The web app's side of audiojob-operator, with @libsql/client as a web app uses it:
// apply the schema, insert two pending jobs, watch their stage and progress, cancel one while
// it runs, and read the other's result. One JSON line per event on stdout.
//
//   TURSO_DATABASE_URL=http://127.0.0.1:8080 [TURSO_AUTH_TOKEN=...] node examples/app/app.mjs
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { createClient } from "@libsql/client";

const db = createClient({
  url: process.env.TURSO_DATABASE_URL ?? "file:audiojobs.db",
  authToken: process.env.TURSO_AUTH_TOKEN,
});
const log = (event) => console.log(JSON.stringify(event));
// A file: database is shared with the controller on this machine: wait for its write lock
// (SQLite's default is to fail at once with SQLITE_BUSY). A server (Turso, sqld) needs nothing.
if (db.protocol === "file") await db.execute("PRAGMA busy_timeout = 5000");

// Every statement in schema.sql is idempotent: safe to run while the controller runs it too.
await db.executeMultiple(await readFile(new URL("../../controller/store/schema.sql", import.meta.url), "utf8"));

const run = `${Date.now().toString(36)}-${process.pid}`;
const keep = `example-${run}-keep`;
const cancel = `example-${run}-cancel`;
for (const id of [keep, cancel]) {
  await db.execute({
    sql: "INSERT INTO audio_jobs (job_id, type, payload) VALUES (?, 'ingest', ?)",
    args: [id, JSON.stringify({ url: "https://example.com/talk.mp3" })],
  });
}
log({ event: "inserted", job_ids: [keep, cancel] });

const seen = new Map();
let cancelled = false;
for (;;) {
  const rs = await db.execute({
    sql: "SELECT job_id, status, stage, progress, result, error, finished_at FROM audio_jobs WHERE job_id IN (?, ?)",
    args: [keep, cancel],
  });
  const rows = Object.fromEntries(rs.rows.map((r) => [r.job_id, r]));
  for (const r of rs.rows) {
    const now = JSON.stringify([r.status, r.stage, r.progress]);
    if (seen.get(r.job_id) !== now) {
      seen.set(r.job_id, now);
      log({ event: "row", job_id: r.job_id, status: r.status, stage: r.stage, progress: r.progress });
    }
  }
  if (!cancelled && rows[cancel].status === "processing") {
    // Cancelling is one conditional UPDATE; the controller stops the pod and finishes the row.
    const done = await db.execute({
      sql: "UPDATE audio_jobs SET status = 'cancelled', updated_at = ? WHERE job_id = ? AND status IN ('pending', 'processing')",
      args: [Date.now(), cancel],
    });
    cancelled = true;
    log({ event: "cancel", job_id: cancel, rows_affected: done.rowsAffected });
  }
  const finished = ["complete", "failed"].includes(rows[keep].status);
  if (finished && rows[cancel].status === "cancelled" && rows[cancel].finished_at !== null) {
    const r = rows[keep];
    log({ event: "result", job_id: keep, status: r.status, result: r.result && JSON.parse(r.result), error: r.error });
    break;
  }
  await sleep(250);
}
db.close();
