

/**
 * Deploy: the release's immutable bundle (bundle.ts), the data deployer with its backups and restores
 * (dataDeployer.ts), the team's code deployers (codeDeployers.ts) and the deployment itself, with its go/no-go,
 * steps and rollback (deployment.ts), its states and transitions (lifecycle.ts, the only writer of
 * `deployments.status`). Owns `bundles`, `deployments`, `deploy_decisions`,
 * `env_locks`, `data_backups`.
 */
export { createBundle, getBundle, listBundles, requireBundle } from './bundle.js';
export type { Bundle } from './bundle.js';
export { backupData, dataChecksums, deployData, restoreData } from './dataDeployer.js';
export {
  claimDue, decideGo, decisionsOf, envLock, executeDeployment, expireStale, getDeployment, goCardFacts, interruptedDeployments,
  requestDeployment, rollbackInterruptedDeployment, rollbackRelease, rollbackTarget, standing, unlockEnv, whereItStopped,
} from './deployment.js';
export type { GoDecision } from './deployment.js';
export { IN_FLIGHT_STATES, ROLLBACK_FROM } from './lifecycle.js';
export type { Deployment, DeploymentStatus, StepState } from './lifecycle.js';
