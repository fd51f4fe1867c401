import type { WebClient } from '@slack/web-api';
import type { Ctx } from '../engine/kernel/context.js';
import type { ReleaseStatus } from '../engine/report/index.js';
import type { CardService } from './cards.js';

/** What every Slack handler is given: the engine context, the Web API client, the card service and the work queues. */
export interface BotDeps {
  ctx: Ctx;
  client: WebClient;
  cards: CardService;
  /** Slack user groups of a user (for roles given as group IDs), cached. */
  groupsOf(user: string): Promise<string[]>;
  /**
   * Runs work after the ack through a bounded queue (urgent work first, e.g. opening a modal before its
   * trigger expires), so a burst of requests never starves the event loop that sends the acks; shutdown
   * waits for it.
   */
  background(work: () => Promise<unknown>, urgent?: boolean): void;
  /**
   * Work that runs for minutes or hours (test runs, promotions, deployments): its own queue, so it never
   * holds the slots that opening a modal or deciding a card needs within Slack's 3 s.
   */
  longRunning(work: () => Promise<unknown>): void;
  /** Minimum interval between two updates of a progress message. */
  progressIntervalMs: number;
  /**
   * A release's status as of at most a second ago: a burst of people asking (status, App Home) share
   * one read instead of each running the same queries while the acks wait for CPU.
   */
  statusOf(release: string): Promise<ReleaseStatus>;
}
