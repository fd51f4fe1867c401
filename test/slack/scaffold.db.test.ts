import { expect, it } from 'vitest';
import { testEnv, type TestEnv } from '../helpers.js';
import type { FakeSlack } from './fake-slack.js';
import { startSlackScaffold } from './scaffold.js';

/** The scaffold of the Slack tests leaves nothing running when its set-up fails half-way. */
it('a set-up that fails after the env was made stops the fake Slack and drops the env before passing the error on', async () => {
  let made: { env: TestEnv; fake: FakeSlack } | undefined;
  const setup = startSlackScaffold({
    env: () => testEnv(1),
    prepare: (env, fake) => {
      made = { env, fake };
      throw new Error('seeding failed');
    },
  });
  await expect(setup).rejects.toThrow('seeding failed');
  expect(made).toBeDefined();
  // the fake's port is closed, and the env's database is gone
  await expect(fetch(made!.fake.apiUrl())).rejects.toThrow();
  const admin = await testEnv(1, {}, { tables: false });
  try {
    const left = await admin.sql('select 1 from pg_database where datname = $1', [made!.env.database]);
    expect(left.rowCount).toBe(0);
  } finally {
    await admin.close();
  }
});
