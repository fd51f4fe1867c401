import type { EntitySpec } from '../../config/load.js';
import { envByRole } from '../../config/load.js';
import { tableExists } from './checksum.js';
import { onEnv, type Ctx } from './context.js';
import { ident, qualified } from './sql.js';

/**
 * Fresh primary keys, for a record that must give its key up to another: re-keying at consolidation, keep
 * both at a decision and at promotion. One rule for the three:
 * - an integer key gets the next integer above every integer key of the entity wherever the key must stay
 *   unique: every source env's collected records, the consolidated result so far, and master (every release,
 *   so the key cannot collide when the release is promoted); at promotion, master with the release's partition;
 * - the keys are handed out in the order the caller gives (env precedence, then old key), so a re-run gives
 *   the same keys;
 * - any other key gets its owner's name as a suffix (`7f-st-2` for ST-2's record, `7f-r2` for R2's row).
 */

/** A key that is an integer (as text), in SQL: `pk ~ INTEGER_KEY`. */
export const INTEGER_KEY = `'^-{0,1}[0-9]+$'`;

export function isIntegerKey(pk: string): boolean {
  return /^-?\d+$/.test(pk);
}

/** A non-integer key, made fresh with its owner's (env's or release's) name. */
export function suffixedKey(pk: string, owner: string): string {
  return `${pk}-${owner.toLowerCase()}`;
}

/** suffixedKey() in SQL, over the key and owner expressions. */
export function suffixedKeySql(pk: string, owner: string): string {
  return `${pk} || '-' || lower(${owner})`;
}

/** SQL: the largest integer key (numeric, null when none) of the text expression `key` over the rows of `from` that match `where`. */
export function maxIntegerKeySql(key: string, from: string, where = 'true'): string {
  return `(select max((${key})::numeric) from ${from} where ${where} and (${key}) ~ ${INTEGER_KEY})`;
}

/** The largest integer key of the entity in master, every release (0 when none, or no master). */
export async function masterMaxKey(ctx: Ctx, e: EntitySpec): Promise<bigint> {
  const master = envByRole(ctx.config, 'master');
  if (!master) return 0n;
  return onEnv(ctx, master, async () => {
    const k = ctx.db.env(master);
    if (!(await tableExists(k, master.schema, e.table))) return 0n;
    const maxKey = maxIntegerKeySql(`${ident(e.primaryKey)}::text`, qualified(master.schema, e.table));
    const res = await k.raw<{ rows: { m: string | null }[] }>(`select ${maxKey}::text as m`);
    return BigInt(res.rows[0]?.m ?? '0');
  });
}

/** The largest of the floors given (each an integer as text, or null for none), 0 when all are null. */
export function keyFloor(...floors: (string | bigint | null | undefined)[]): bigint {
  return floors.reduce<bigint>((max, f) => (f === null || f === undefined ? max : BigInt(f) > max ? BigInt(f) : max), 0n);
}

/** Hands out fresh keys above `floor`, in the order asked: an integer key the next integer, another its owner's suffix. */
export function freshKeys(floor: bigint): (pk: string, owner: string) => string {
  let last = floor;
  return (pk, owner) => {
    if (!isIntegerKey(pk)) return suffixedKey(pk, owner);
    last += 1n;
    return last.toString();
  };
}
