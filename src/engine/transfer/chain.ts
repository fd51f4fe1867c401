import { canonicalJson } from '../kernel/audit.js';
import type { Ctx } from '../kernel/context.js';
import { digestOf, signatureHolds, trustedKeys } from '../kernel/package.js';
import type { TransferManifest, TravelledEvent } from './manifest.js';

/**
 * The travelled audit chains (on premises): the events each imported package carried, stored verbatim.
 * Their HMACs are keyed with the cloud's audit key, which never travels, so they are vouched for by the
 * package's signature instead: the stored manifest must still match its digest and its signature (by a
 * key this side trusts), the stored events must equal the manifest's one for one, consecutive events must
 * link (prev_hash), and the newest must sit at or before the signed chain head.
 */
export interface TravelledChain {
  packageId: number;
  release: string;
  digest: string;
  keyId: string | null;
  sourceRunId: number;
  events: number;
  head: { seq: number; hash: string } | null;
  intact: boolean;
  broken: string | null;
}

interface PackageRow {
  id: number;
  release: string;
  digest: string;
  key_id: string;
  source_run_id: number;
  manifest: string;
  signature: string;
}

const fields = (e: Omit<TravelledEvent, 'id'> & { id?: number | string }) =>
  canonicalJson([Number(e.seq), e.at, e.actor, e.action, e.release, e.subject, e.details, e.prev_hash, e.hash]);

export async function verifyTravelledChains(ctx: Ctx, release?: string): Promise<TravelledChain[]> {
  const q = ctx.db.control('transfer_packages').orderBy('id');
  if (release) q.where({ release });
  const packages = (await q.select('id', 'release', 'digest', 'key_id', 'source_run_id', 'manifest', 'signature')) as PackageRow[];
  if (packages.length === 0) return [];
  const trusted = trustedKeys(ctx.config.transfer.publicKeys, `${ctx.config.file}: transfer.publicKeys`);
  const out: TravelledChain[] = [];
  for (const p of packages) {
    const stored = (await ctx.db.control('imported_audit_events').where({ package_id: p.id }).orderBy('seq')) as (TravelledEvent & { seq: string | number })[];
    const report: TravelledChain = { packageId: p.id, release: p.release, digest: p.digest, keyId: p.key_id, sourceRunId: p.source_run_id, events: stored.length, head: null, intact: true, broken: null };
    const fail = (why: string) => out.push({ ...report, intact: false, broken: `package ${p.digest.slice(0, 16)}… (${p.release}, run #${p.source_run_id}): ${why}` });
    if (digestOf(p.manifest) !== p.digest) {
      fail('the stored manifest does not match its digest');
      continue;
    }
    const sig = signatureHolds(p.manifest, p.signature, trusted);
    if (!sig.ok) {
      fail(sig.why ?? 'the signature does not hold');
      continue;
    }
    const m = JSON.parse(p.manifest) as TransferManifest;
    const carried = m.audit.events.filter((e) => e.seq != null).sort((a, b) => a.seq! - b.seq!);
    if (m.audit.head) report.head = { seq: m.audit.head.seq, hash: m.audit.head.hash };
    if (carried.length !== stored.length) {
      fail(`${stored.length} travelled event(s) stored, the signed manifest carries ${carried.length}`);
      continue;
    }
    let problem: string | null = null;
    for (let i = 0; i < stored.length && !problem; i++) {
      const s = stored[i]!;
      const c = carried[i]!;
      if (fields(s) !== fields(c)) problem = `travelled event #${c.seq} (${c.action}) was altered here: it differs from the signed manifest's`;
      else if (i > 0 && Number(s.seq) === Number(stored[i - 1]!.seq) + 1 && s.prev_hash !== stored[i - 1]!.hash) problem = `travelled event #${c.seq} does not link to event #${c.seq! - 1}`;
    }
    const last = carried.at(-1);
    if (!problem && last && m.audit.head && (last.seq! > m.audit.head.seq || (last.seq === m.audit.head.seq && last.hash !== m.audit.head.hash))) {
      problem = `the newest travelled event #${last.seq} is not vouched for by the signed chain head #${m.audit.head.seq}`;
    }
    if (problem) fail(problem);
    else out.push(report);
  }
  return out;
}
