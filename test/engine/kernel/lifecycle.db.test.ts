import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { passGate, transition } from '../../../src/engine/kernel/lifecycle.js';
import { TributaryError } from '../../../src/errors.js';
import { testEnv, type TestEnv } from '../../helpers.js';

/** The gate before a step (one pattern for load, validate, tier 1, promote, bundle and deploy): refusals are audited. */
let env: TestEnv;
beforeAll(async () => {
  env = await testEnv(1, {}, { tables: false });
});
afterAll(async () => {
  await env?.close();
});

const refusals = async (step: string) => env.db.control('audit_events').where({ action: `gate.${step}.refused`, release: 'R2' }).pluck('details');

describe('passGate', () => {
  it('refuses a lifecycle event the state does not allow, audited with the state, saying what must happen first', async () => {
    const err = (await passGate(env.db.control, 'R2', 'load', 'cli:test').catch((e: unknown) => e)) as TributaryError;
    expect([err.code, err.message]).toEqual(['gate_state', expect.stringMatching(/^release R2 is planned: cannot load it; /)]);
    expect(await refusals('load')).toEqual([{ state: 'planned' }]);
  });

  it('a step with its own check: refused as the check says, audited the same way; passed, it returns the state and audits nothing', async () => {
    const check = (state: string) => {
      if (state !== 'locked') throw new TributaryError('gate_state', `not locked but ${state}`);
    };
    await expect(passGate(env.db.control, 'R2', 'deploy', 'cli:test', check)).rejects.toThrow('not locked but planned');
    expect(await refusals('deploy')).toEqual([{ state: 'planned' }]);
    await transition(env.db.control, 'R2', 'lock');
    expect(await passGate(env.db.control, 'R2', 'deploy', 'cli:test', check)).toBe('locked');
    expect(await passGate(env.db.control, 'R2', 'consolidate', 'cli:test')).toBe('locked');
    expect(await refusals('deploy')).toHaveLength(1);
    expect(await refusals('consolidate')).toHaveLength(0);
  });
});
