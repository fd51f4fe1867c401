import { describe, expect, it } from 'vitest';
import { helpLines } from '../../src/commands/help.js';
import { commandsOf, rolesOf } from '../../src/commands/table.js';

describe('help', () => {
  it('names each command\'s role once, from the table (a summary does not repeat it)', () => {
    for (const side of ['cli', 'slack'] as const) {
      const lines = helpLines(side);
      expect(lines).toHaveLength(commandsOf(side).length);
      for (const [i, def] of commandsOf(side).entries()) {
        const roles = rolesOf(def);
        const line = lines[i] ?? '';
        if (roles) expect(line.endsWith(` (${roles})`), line).toBe(true);
        for (const role of ['reviewer', 'qa_lead', 'release_manager']) expect(line.split(`(${role})`).length - 1, line).toBeLessThanOrEqual(1);
        expect(def.summary, def.id).not.toMatch(/\((reviewer|qa_lead|release_manager)[;)]/);
      }
    }
  });
});
