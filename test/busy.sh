#!/usr/bin/env bash
# npm run test:busy: the whole suite on a machine whose cores are busy with other work. Everything runs
# pinned to two cores (taskset -c 0,1) with one busy loop at normal priority on each of them, so a test
# that assumes a speed (a sleep, a short timeout) fails here rather than on a loaded CI machine.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v taskset >/dev/null || { echo "test:busy needs taskset (util-linux)" >&2; exit 2; }
busy=()
stop() { for pid in "${busy[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop EXIT
for core in 0 1; do
  taskset -c "$core" sh -c 'while :; do :; done' &
  busy+=("$!")
done
taskset -c 0,1 npx vitest run "$@"
