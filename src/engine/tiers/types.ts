/**
 * Two-tier testing: the shapes shared by the JUnit parser, the catalog, the runners (local and pg-boss
 * agents) and the tier orchestration.
 */
export type TestStatus = 'passed' | 'failed' | 'errored' | 'skipped';

/** One test case as a runner reported it in JUnit XML, with the features it belongs to. */
export interface TestCaseResult {
  /** Stable identity across runs: `${classname}::${name}`, or the name alone when there is no classname. */
  id: string;
  name: string;
  classname: string;
  file?: string;
  status: TestStatus;
  durationMs: number;
  /** Failure or error message (first line of the body when there is no message attribute), for failed/errored. */
  message?: string;
  /** Feature ids from tags in the name (`@FEAT-101`, `[FEAT-101]`), JUnit properties, or the mapping file. */
  features: string[];
  smoke: boolean;
  properties: Record<string, string>;
}

/** A test the catalog knows (learnt from earlier results or the mapping file). */
export interface CatalogTest {
  id: string;
  name: string;
  classname: string;
  file?: string;
  features: string[];
  smoke: boolean;
  /** Last observed duration; undefined when there is no history. */
  durationMs?: number;
}

/** What one shard of a run must execute: everything a local child process or a remote agent needs. */
export interface ShardSpec {
  runId: number;
  /** 1-based. */
  index: number;
  count: number;
  tests: { id: string; name: string }[];
  /** The team's command with placeholders still in it (the runner substitutes them). */
  command: string;
  cwd: string;
  env: string;
  databaseUrl: string;
  timeoutMs: number;
  /** Directory where the runner writes the selection file and where the command writes JUnit XML. */
  workDir: string;
  /** Failing tests are re-run this many times (a pass on retry marks the test flaky). */
  retries: number;
}

export interface ShardOutcome {
  index: number;
  /** done: the command ran and its JUnit XML parsed (tests may still have failed); errored: no trustworthy results. */
  status: 'done' | 'errored';
  cases: TestCaseResult[];
  /** Ids of tests that failed first and passed on a retry. */
  retriedPassed: string[];
  /**
   * Every test case the JUnit XML reported, selected or not (runners such as node:test list the tests
   * they did not select as skipped): the catalog learns new tests from them.
   */
  seen?: TestCaseResult[];
  error?: string;
  exitCode: number | null;
  durationMs: number;
  /** The last lines of the command's output, secrets redacted. */
  outputTail: string;
  agent: string;
}
