// The benchmark's test command: runs the tests listed in the selection file, each sleeping its duration
// (encoded in its name: "t0042 d=37ms"), and writes real JUnit XML. Usage: node sleep-runner.mjs <tests-file> <junit>
import fs from 'node:fs';

const [testsFile, junit] = process.argv.slice(2);
const names = fs.readFileSync(testsFile, 'utf8').split('\n').filter(Boolean);
const cell = new Int32Array(new SharedArrayBuffer(4));
let xml = '<?xml version="1.0" encoding="utf-8"?>\n<testsuites>\n<testsuite name="bench">\n';
for (const name of names) {
  const ms = Number(/d=(\d+)ms/.exec(name)?.[1] ?? 0);
  const t0 = performance.now();
  Atomics.wait(cell, 0, 0, ms);
  xml += `<testcase classname="bench" name="${name}" time="${((performance.now() - t0) / 1000).toFixed(4)}"/>\n`;
}
xml += '</testsuite>\n</testsuites>\n';
fs.writeFileSync(junit, xml);
