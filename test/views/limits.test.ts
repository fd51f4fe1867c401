import { expect, it } from 'vitest';
import { hidePaths } from '../../src/views/limits.js';

it("shows a path on the bot's machine by its file name, and leaves URLs, ids and prose alone", () => {
  expect(hidePaths('R2 restored into master from /var/lib/tributary/archives/R2/manifest.json (1.2 s)')).toBe('R2 restored into master from …/manifest.json (1.2 s)');
  expect(hidePaths('files:         /home/ana/.tributary/bundles/R2/v1/')).toBe('files:         …/v1');
  expect(hidePaths('see https://example.com/a/b and C-001/v2, 1/2 passed, ratio 3/4/5')).toBe('see https://example.com/a/b and C-001/v2, 1/2 passed, ratio 3/4/5');
  expect(hidePaths('merge: role=2 / status=1')).toBe('merge: role=2 / status=1');
});
