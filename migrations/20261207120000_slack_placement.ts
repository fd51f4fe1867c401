import type { Knex } from 'knex';

/**
 * Where the bot posted what, in one record that only the Slack adapter reads (src/slack/messages.ts).
 * Before, the place of a message was kept three ways: `slack_messages` (conflict cards by release, run and
 * code; queue summaries by release and run), `deployments.slack` (the go/no-go card) and
 * `prune_proposals.channel/ts` (the pruning proposal). Now `slack_messages` holds every one, keyed by what
 * the message is about: `kind` and `subject`, the id of its row:
 *   conflict   → conflicts.id (a conflict's card; was kind `card`)
 *   summary    → runs.id (the queue summary of the run)
 *   deployment → deployments.id (the go/no-go card)
 *   prune      → prune_proposals.id (the proposal sent to the feature's owner)
 * and the engine's tables carry nothing of Slack. Up moves the existing rows: a card whose conflict no
 * longer exists is about nothing and is dropped, as is a deployment's channel recorded without a message
 * (Slack never confirmed the post). Down moves them back.
 */
const OLD_UNIQUE = ['kind', 'release', 'run_id', 'code', 'channel'];
const NEW_UNIQUE = ['kind', 'subject', 'channel'];

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('slack_messages', (t) => {
    t.integer('subject');
  });
  await knex.raw(`
    update slack_messages m set kind = 'conflict', subject = c.id
      from conflicts c
     where m.kind = 'card' and c.release = m.release and c.run_id = m.run_id and c.code = m.code`);
  await knex.raw(`delete from slack_messages where kind = 'card'`);
  await knex.raw(`update slack_messages set subject = run_id where kind = 'summary'`);
  await knex.schema.alterTable('slack_messages', (t) => {
    t.dropUnique(OLD_UNIQUE);
    t.dropColumns('release', 'run_id', 'code');
  });
  await knex.raw(`
    insert into slack_messages (kind, subject, channel, ts, posted_at)
    select 'deployment', id, slack->>'channel', slack->>'ts', requested_at
      from deployments
     where slack->>'channel' is not null and slack->>'ts' is not null
     order by id`);
  await knex.raw(`
    insert into slack_messages (kind, subject, channel, ts, posted_at)
    select 'prune', id, channel, ts, proposed_at
      from prune_proposals
     where channel is not null and ts is not null
     order by id`);
  await knex.schema.alterTable('slack_messages', (t) => {
    t.integer('subject').notNullable().alter();
    t.unique(NEW_UNIQUE);
  });
  await knex.schema.alterTable('deployments', (t) => {
    t.dropColumn('slack');
  });
  await knex.schema.alterTable('prune_proposals', (t) => {
    t.dropColumns('channel', 'ts');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('deployments', (t) => {
    t.jsonb('slack').notNullable().defaultTo('{}');
  });
  await knex.schema.alterTable('prune_proposals', (t) => {
    t.text('channel');
    t.text('ts');
  });
  // the newest message of each deployment and proposal (the adapter records one)
  await knex.raw(`
    update deployments d set slack = jsonb_build_object('channel', m.channel, 'ts', m.ts)
      from (select distinct on (subject) subject, channel, ts from slack_messages where kind = 'deployment' order by subject, id desc) m
     where m.subject = d.id`);
  await knex.raw(`
    update prune_proposals p set channel = m.channel, ts = m.ts
      from (select distinct on (subject) subject, channel, ts from slack_messages where kind = 'prune' order by subject, id desc) m
     where m.subject = p.id`);
  await knex.raw(`delete from slack_messages where kind in ('deployment', 'prune')`);
  await knex.schema.alterTable('slack_messages', (t) => {
    t.dropUnique(NEW_UNIQUE);
    t.text('release');
    t.integer('run_id');
    t.text('code').notNullable().defaultTo('');
  });
  await knex.raw(`
    update slack_messages m set kind = 'card', release = c.release, run_id = c.run_id, code = c.code
      from conflicts c
     where m.kind = 'conflict' and c.id = m.subject`);
  await knex.raw(`
    update slack_messages m set release = r.release, run_id = r.id
      from runs r
     where m.kind = 'summary' and r.id = m.subject`);
  // about nothing any more (the conflict or run is gone); and two conflicts of one code in one run (a
  // promotion's conflict dropped, its code given again) share one card, the newest
  await knex.raw(`delete from slack_messages where release is null`);
  await knex.raw(`
    delete from slack_messages m
     where exists (select 1 from slack_messages n
                    where n.kind = m.kind and n.release = m.release and n.run_id = m.run_id and n.code = m.code
                      and n.channel = m.channel and n.id > m.id)`);
  await knex.schema.alterTable('slack_messages', (t) => {
    t.dropColumn('subject');
    t.text('release').notNullable().alter();
    t.integer('run_id').notNullable().alter();
    t.unique(OLD_UNIQUE);
  });
}
