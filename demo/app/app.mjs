// The demo's tiny production app: its code version is a release directory behind a `current` link, as
// many teams deploy. This script is the team's deployment tool that Tributary drives (deploy.commands):
//   node demo/app/app.mjs current | deploy <version> | rollback <version> | restart | health | maintenance on|off
// The app lives in .tributary/demo-app (TRIBUTARY_DEMO_APP overrides it).
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(process.env.TRIBUTARY_DEMO_APP ?? '.tributary/demo-app');
const releases = path.join(root, 'releases');
const current = path.join(root, 'current');
const [cmd, arg] = process.argv.slice(2);

function fail(message) {
  console.error(message);
  process.exit(1);
}

function switchTo(version) {
  const dir = path.join(releases, version);
  if (!fs.existsSync(dir)) fail(`no release directory ${dir}`);
  // atomic switch: a new link renamed over the old one
  const tmp = `${current}.tmp`;
  fs.rmSync(tmp, { force: true });
  fs.symlinkSync(dir, tmp);
  fs.renameSync(tmp, current);
  console.log(`current -> releases/${version}`);
}

switch (cmd) {
  case 'current': {
    if (!fs.existsSync(current)) fail('no current release');
    console.log(path.basename(fs.readlinkSync(current)));
    break;
  }
  case 'deploy': {
    if (!arg) fail('usage: deploy <version>');
    const dir = path.join(releases, arg);
    fs.mkdirSync(dir, { recursive: true });
    // what this version of the code needs from the data: the "-nickname" build reads users.nickname,
    // a column the data does not have (the demo's bad deployment)
    const release = /^r(\d+)/i.exec(arg)?.[1];
    const manifest = { version: arg, release: release ? `R${release}` : null, requires: arg.includes('nickname') ? ['users.nickname'] : ['users.email', 'accounts.balance'] };
    fs.writeFileSync(path.join(dir, 'version.json'), JSON.stringify(manifest, null, 2));
    switchTo(arg);
    break;
  }
  case 'rollback':
    if (!arg) fail('usage: rollback <version>');
    switchTo(arg);
    break;
  case 'restart':
    fs.mkdirSync(root, { recursive: true });
    fs.writeFileSync(path.join(root, 'restarted_at'), new Date().toISOString());
    console.log('restarted');
    break;
  case 'health':
    if (!fs.existsSync(path.join(current, 'version.json'))) fail('unhealthy: no current/version.json');
    console.log('healthy');
    break;
  case 'maintenance': {
    fs.mkdirSync(root, { recursive: true });
    const flag = path.join(root, 'maintenance');
    if (arg === 'on') fs.writeFileSync(flag, 'on');
    else if (arg === 'off') fs.rmSync(flag, { force: true });
    else fail('usage: maintenance on|off');
    console.log(`maintenance ${arg}`);
    break;
  }
  default:
    fail(`unknown command ${cmd ?? ''}: current | deploy <version> | rollback <version> | restart | health | maintenance on|off`);
}
