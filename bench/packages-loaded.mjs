// `node --import bench/packages-loaded.mjs …`: writes, as the process exits, the packages of node_modules
// it loaded (one JSON array of { name, how: 'require' | 'import' }) to the file in PACKAGES_LOADED_FILE.
// bench/cli.ts uses it to say which packages a CLI command loads; each is then timed alone.
import fs from 'node:fs';
import { createRequire, register } from 'node:module';

const out = process.env.PACKAGES_LOADED_FILE;
const esmLog = `${out}.esm`;
const require = createRequire(import.meta.url);
const packageOf = (file) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file)?.[1];

// ES modules: a resolve hook (it runs on a thread of its own) appends each resolved URL
register(
  `data:text/javascript,${encodeURIComponent(`
import fs from 'node:fs';
let log;
export function initialize(file) { log = file; }
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  if (r.url.includes('/node_modules/')) fs.appendFileSync(log, r.url + '\\n');
  return r;
}`)}`,
  { data: esmLog },
);

process.on('exit', () => {
  const imported = new Set((fs.existsSync(esmLog) ? fs.readFileSync(esmLog, 'utf8').split('\n') : []).map(packageOf).filter(Boolean));
  // CommonJS modules, required or imported: the require cache
  const all = new Set([...imported, ...Object.keys(require.cache).map(packageOf).filter(Boolean)]);
  fs.rmSync(esmLog, { force: true });
  fs.writeFileSync(out, JSON.stringify([...all].map((name) => ({ name, how: imported.has(name) ? 'import' : 'require' }))));
});
