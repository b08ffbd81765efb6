// The conformance script through @libsql/client: `node client.mjs <url>` prints one JSON line
// per step. Values are tagged with the JavaScript type they arrived as, so an integer that
// came back as a float (or a string) shows as a difference.
import { createClient } from "@libsql/client";

const client = createClient({
  url: process.argv[2],
  authToken: process.env.TURSO_AUTH_TOKEN,
  intMode: "bigint",
});
const out = [];

function value(v) {
  if (v === null) return { null: true };
  if (typeof v === "bigint") return { integer: v.toString() };
  if (typeof v === "number") return { float: v };
  if (typeof v === "string") return { text: v };
  if (v instanceof ArrayBuffer) return { blob: Buffer.from(v).toString("hex") };
  return { unknown: String(v) };
}

function result(rs) {
  return {
    columns: rs.columns,
    column_types: rs.columnTypes,
    rows: rs.rows.map((row) => rs.columns.map((_, i) => value(row[i]))),
    rows_affected: rs.rowsAffected,
    last_insert_rowid: rs.lastInsertRowid === undefined ? null : String(rs.lastInsertRowid),
  };
}

async function step(name, fn) {
  try {
    out.push({ step: name, ok: await fn() });
  } catch (e) {
    out.push({ step: name, error: { code: e.code ?? null, message: String(e.message) } });
  }
}

const script = JSON.parse(process.argv[3]);
for (const s of script) {
  if (s.kind === "execute") {
    await step(s.name, async () => result(await client.execute({ sql: s.sql, args: s.args.map(arg) })));
  } else if (s.kind === "batch") {
    await step(s.name, async () =>
      (await client.batch(s.stmts.map((t) => ({ sql: t.sql, args: t.args.map(arg) })), "write")).map(result),
    );
  }
}
client.close();
console.log(JSON.stringify(out));

function arg(a) {
  if ("integer" in a) return BigInt(a.integer);
  if ("float" in a) return a.float;
  if ("text" in a) return a.text;
  if ("blob" in a) return new Uint8Array(Buffer.from(a.blob, "hex"));
  return null;
}
