import { TributaryError } from '../../errors.js';
import { recordAudit } from './audit.js';
import type { Ctx } from './context.js';
import { must } from './must.js';

/**
 * Roles from config, by Slack user ID or user group ID. Deciding needs reviewer (or qa_lead); tag,
 * consolidate and review need qa_lead, and so does waiving a validation finding. Every state-changing
 * command checks its role here, in the CLI as in Slack (test/e2e/role-walk.db.test.ts walks them all). A role whose list is
 * empty is open to everyone (the bot warns at start-up). A refusal names the role needed and is audited.
 */
export type Role = 'reviewer' | 'qa_lead' | 'release_manager';

/** Per action, the roles that may do it, the narrowest first: a refusal names that one as the role to be granted. */
export const NEEDS: Record<string, Role[]> = {
  decide: ['reviewer', 'qa_lead'],
  tag: ['qa_lead'],
  consolidate: ['qa_lead'],
  review: ['reviewer', 'qa_lead'],
  waive: ['qa_lead'],
  validate: ['reviewer', 'qa_lead'],
  load: ['qa_lead'],
  /** `tributary export`: a validated release as a signed transfer package (cloud side). */
  export: ['qa_lead'],
  test: ['qa_lead'],
  promote: ['qa_lead'],
  approve: ['qa_lead'],
  deploy: ['release_manager'],
  go: ['release_manager'],
  rollback: ['release_manager'],
  unlock: ['release_manager'],
  bundle: ['release_manager'],
  archive: ['qa_lead'],
  restore: ['qa_lead'],
  nightly: ['qa_lead'],
  /** `tag --install`: alters an ST env's schema. */
  install: ['qa_lead'],
  /** `conflicts next`: assigns a conflict to the caller, as the Next button does. */
  next: ['reviewer', 'qa_lead'],
  /** `policy accept`: writes a learnt rule into the config file. */
  policy: ['qa_lead'],
};

/** A role action of NEEDS: what a command table entry names as the role it needs. */
export type RoleAction = keyof typeof NEEDS;

export function openRoles(ctx: Ctx): Role[] {
  return (['reviewer', 'qa_lead', 'release_manager'] as Role[]).filter((r) => ctx.config.roles[r].length === 0);
}

export async function authorize(ctx: Ctx, user: string, groups: string[], action: RoleAction, release?: string): Promise<void> {
  const needed = must(NEEDS[action], `the roles that may ${action} (roles.ts NEEDS)`);
  const ok = needed.some((role) => {
    const members = ctx.config.roles[role];
    return members.length === 0 || members.includes(user) || groups.some((g) => members.includes(g));
  });
  if (ok) return;
  await recordAudit(ctx.db.control, {
    actor: user,
    action: 'auth.refused',
    ...(release ? { release } : {}),
    subject: action,
    details: { needed },
  });
  throw new TributaryError(
    'forbidden',
    `${action} needs the ${needed.join(' or ')} role; ` +
      `whoever runs the Tributary bot grants it by adding you to roles.${needed[0]} in its config`,
    { needed },
  );
}
