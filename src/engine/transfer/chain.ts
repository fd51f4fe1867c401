import type crypto from 'node:crypto';
import type { TransferPackagesRow } from '../../db/rows.js';
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

type PackageRow = Pick<TransferPackagesRow, 'id' | 'release' | 'digest' | 'key_id' | 'source_run_id' | 'manifest' | 'signature'>;

const fields = (e: Omit<TravelledEvent, 'id'> & { id?: number | string }) =>
  canonicalJson([Number(e.seq), e.at, e.actor, e.action, e.release, e.subject, e.details, e.prev_hash, e.hash]);

type StoredEvent = TravelledEvent & { seq: string | number };
type CarriedEvent = TravelledEvent & { seq: number };

/** The stored events against the signed manifest's, one for one, each linking to the one before. */
function eventsProblem(stored: StoredEvent[], carried: CarriedEvent[]): string | null {
  let before: StoredEvent | undefined;
  for (const [i, s] of stored.entries()) {
    const c = carried[i];
    if (!c || fields(s) !== fields(c)) {
      return `travelled event #${c?.seq} (${c?.action}) was altered here: it differs from the signed manifest's`;
    }
    if (before && Number(s.seq) === Number(before.seq) + 1 && s.prev_hash !== before.hash) {
      return `travelled event #${c.seq} does not link to event #${c.seq - 1}`;
    }
    before = s;
  }
  return null;
}

/** The newest carried event at or before the signed chain head. */
function headProblem(carried: CarriedEvent[], head: TransferManifest['audit']['head']): string | null {
  const last = carried.at(-1);
  if (!last || !head) return null;
  if (last.seq > head.seq || (last.seq === head.seq && last.hash !== head.hash)) {
    return `the newest travelled event #${last.seq} is not vouched for by the signed chain head #${head.seq}`;
  }
  return null;
}

/** One package's travelled chain: its report, with what broke it if anything did. */
async function verifyPackage(ctx: Ctx, p: PackageRow, trusted: Map<string, crypto.KeyObject>): Promise<TravelledChain> {
  const stored: StoredEvent[] = await ctx.db.control('imported_audit_events').where({ package_id: p.id }).orderBy('seq');
  const report: TravelledChain = {
    packageId: p.id,
    release: p.release,
    digest: p.digest,
    keyId: p.key_id,
    sourceRunId: p.source_run_id,
    events: stored.length,
    head: null,
    intact: true,
    broken: null,
  };
  const fail = (why: string): TravelledChain => ({
    ...report,
    intact: false,
    broken: `package ${p.digest.slice(0, 16)}… (${p.release}, run #${p.source_run_id}): ${why}`,
  });
  if (digestOf(p.manifest) !== p.digest) return fail('the stored manifest does not match its digest');
  const sig = signatureHolds(p.manifest, p.signature, trusted);
  if (!sig.ok) return fail(sig.why ?? 'the signature does not hold');
  const m = JSON.parse(p.manifest) as TransferManifest;
  const carried = m.audit.events.filter((e): e is CarriedEvent => e.seq != null).sort((a, b) => a.seq - b.seq);
  if (m.audit.head) report.head = { seq: m.audit.head.seq, hash: m.audit.head.hash };
  if (carried.length !== stored.length) {
    return fail(`${stored.length} travelled event(s) stored, the signed manifest carries ${carried.length}`);
  }
  const problem = eventsProblem(stored, carried) ?? headProblem(carried, m.audit.head);
  return problem ? fail(problem) : report;
}

export async function verifyTravelledChains(ctx: Ctx, release?: string): Promise<TravelledChain[]> {
  const q = ctx.db.control<TransferPackagesRow>('transfer_packages').orderBy('id');
  if (release) q.where({ release });
  const packages: PackageRow[] = await q.select('id', 'release', 'digest', 'key_id', 'source_run_id', 'manifest', 'signature');
  if (packages.length === 0) return [];
  const trusted = trustedKeys(ctx.config.transfer.publicKeys, `${ctx.config.file}: transfer.publicKeys`);
  const out: TravelledChain[] = [];
  for (const p of packages) out.push(await verifyPackage(ctx, p, trusted));
  return out;
}
