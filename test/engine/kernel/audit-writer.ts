import readline from 'node:readline';
import { loadConfig } from '../../../src/config/load.js';
import { openDatabase } from '../../../src/db/connect.js';
import { recordAudit } from '../../../src/engine/kernel/audit.js';

/**
 * A writer process for test/engine/kernel/audit.db.test.ts: `node --import tsx audit-writer.ts <config> <name> <count>`
 * opens the control database (the audit key from TRIBUTARY_AUDIT_KEY in its environment), prints
 * "ready", waits for "go" on stdin, then appends <count> events through recordAudit, five at a time,
 * every other one inside a transaction of its own, and prints {start, end} as one JSON line.
 */

const [file, name, countText] = process.argv.slice(2);
if (!file || !name || !countText) throw new Error('usage: audit-writer.ts <config> <name> <count>');
const count = Number(countText);
const db = await openDatabase(loadConfig({ file }));
const lines = readline.createInterface({ input: process.stdin });
const go = new Promise<void>((resolve) => lines.on('line', (l) => l.trim() === 'go' && resolve()));
process.stdout.write('ready\n');
await go;
lines.close();

const start = Date.now();
let next = 0;
const append = async (i: number) => {
  const event = { actor: `writer:${name}`, action: 'test.append', release: 'R2', subject: `${name}-${i}`, details: { i, writer: name, pid: process.pid } };
  if (i % 2 === 0) await recordAudit(db.control, event);
  else await db.control.transaction((trx) => recordAudit(trx, event));
};
await Promise.all(
  Array.from({ length: 5 }, async () => {
    while (next < count) await append(next++);
  }),
);
const end = Date.now();
await db.close();
process.stdout.write(`${JSON.stringify({ start, end })}\n`, () => process.exit(0));
