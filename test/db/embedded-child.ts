/**
 * A second process for test/db/embedded.db.test.ts: `node --import tsx embedded-child.ts <dataDir> [hold]`
 * calls ensureEmbeddedServer on the data directory and prints {owner, port, pid} as one JSON line.
 * With `hold` it stays alive (as a bot would) until it is killed; on SIGTERM it leaves the server as a
 * stopping bot does (release()), prints {released: …} and exits.
 */
import { ensureEmbeddedServer } from '../../src/db/embedded.js';

const [dataDir, mode] = process.argv.slice(2);
if (!dataDir) throw new Error('usage: embedded-child.ts <dataDir> [hold]');
const handle = await ensureEmbeddedServer(dataDir);
process.stdout.write(`${JSON.stringify({ owner: handle.owner, port: handle.info.port, pid: process.pid })}\n`);
if (mode === 'hold') {
  const timer = setInterval(() => undefined, 60_000);
  process.once('SIGTERM', () => {
    void handle.release().then((released) => {
      clearInterval(timer);
      process.stdout.write(`${JSON.stringify({ released })}\n`);
    });
  });
} else process.exit(0);
