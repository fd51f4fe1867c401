/**
 * A second process for test/db/embedded.test.ts: `node --import tsx embedded-child.ts <dataDir> [hold]`
 * calls ensureEmbeddedServer on the data directory and prints {owner, port, pid} as one JSON line.
 * With `hold` it stays alive (as an owner would) until it is killed.
 */
import { ensureEmbeddedServer } from '../../src/db/embedded.js';

const [dataDir, mode] = process.argv.slice(2);
if (!dataDir) throw new Error('usage: embedded-child.ts <dataDir> [hold]');
const handle = await ensureEmbeddedServer(dataDir);
process.stdout.write(`${JSON.stringify({ owner: handle.owner, port: handle.info.port, pid: process.pid })}\n`);
if (mode === 'hold') setInterval(() => undefined, 60_000);
else process.exit(0);
