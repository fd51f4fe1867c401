import fs from 'node:fs';
import type { YAMLMap, YAMLSeq } from 'yaml';
import { TributaryError } from '../errors.js';
import { yamlLib } from '../lazy.js';
import { logger, redact } from '../log.js';
import { loadConfig, type Config, type ScopedRule } from './load.js';

/**
 * The policy file: a scoped rule accepted from a proposal is written into the config file (the YAML
 * Document API keeps its comments, its layout and its ${VAR} references untouched), under policy.scoped,
 * with a comment naming where it came from. The file is validated before it replaces the old one.
 */
export function addScopedRule(file: string, rule: ScopedRule, comment: string): void {
  const text = fs.readFileSync(file, 'utf8');
  const { isMap, isSeq, parseDocument } = yamlLib();
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new TributaryError('config_invalid', `${file}: ${doc.errors[0]!.message}`, { file });
  if (!doc.hasIn(['policy'])) doc.set('policy', doc.createNode({}));
  const policy = doc.get('policy');
  if (!isMap(policy)) throw new TributaryError('config_invalid', `${file}: policy is not a mapping`, { file, path: 'policy' });
  if (!(policy as YAMLMap).has('scoped')) (policy as YAMLMap).set('scoped', doc.createNode([]));
  const seq = (policy as YAMLMap).get('scoped');
  if (!isSeq(seq)) throw new TributaryError('config_invalid', `${file}: policy.scoped is not a list`, { file, path: 'policy.scoped' });
  if ((seq as YAMLSeq).items.some((i) => isMap(i) && i.get('name') === rule.name)) {
    throw new TributaryError('already_decided', `${file}: policy.scoped already has a rule named ${rule.name}`, { file });
  }
  const node = doc.createNode({ name: rule.name, entity: rule.entity, kind: rule.kind, attributes: rule.attributes, envs: rule.envs, ...rule.choice }) as YAMLMap;
  for (const key of ['attributes', 'envs']) (node.get(key) as YAMLSeq).flow = true;
  node.commentBefore = ` ${comment}`;
  (seq as YAMLSeq).items.push(node);
  const tmp = `${file}.tributary-${process.pid}.tmp`;
  fs.writeFileSync(tmp, doc.toString({ lineWidth: 0 }), { mode: fs.statSync(file).mode });
  try {
    // the new file must load as a whole (its ${VAR}s resolved as they are now) before it replaces the old one
    const checked = loadConfig({ file: tmp });
    if (!checked.policy.scoped.some((r) => r.name === rule.name)) throw new TributaryError('internal', `${file}: the rule ${rule.name} did not read back`);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/**
 * The running bot's policy follows its file: when the file changes, the policy (rules, rename template,
 * scoped rules) is read again and replaces the one the bot holds, in place (everything holding the
 * config sees it). A file that does not load keeps the old policy, and says why in the log.
 */
export function watchPolicy(config: Config, opts: { intervalMs?: number; onReload?: (c: Config) => void } = {}): () => void {
  const file = config.file;
  const listener = (cur: fs.Stats, prev: fs.Stats) => {
    if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size) return;
    try {
      const fresh = loadConfig({ file });
      config.policy = fresh.policy;
      logger().info({ scoped: fresh.policy.scoped.map((r) => r.name) }, `policy reloaded from ${file}`);
      opts.onReload?.(config);
    } catch (err) {
      logger().warn({ err: redact((err as Error).message) }, `the policy in ${file} did not load; keeping the one in use`);
    }
  };
  fs.watchFile(file, { interval: opts.intervalMs ?? 1000 }, listener);
  return () => fs.unwatchFile(file, listener);
}
