#!/usr/bin/env bash
# Runs make build's module check (scripts/check-modules.sh) many times in a
# row against one built binary while both CPUs are kept busy, to show that
# it does not fail at random under load. Usage:
#   scripts/check-modules-stress.sh [CADDY_BINARY] [RUNS]
# (default: bin/caddy, built here when missing; 200 runs).
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-bin/caddy}
runs=${2:-200}
[ -x "$binary" ] || go build -o "$binary" ./cmd/caddy

busy=()
for _ in $(seq "$(nproc)"); do
	(while :; do :; done) &
	busy+=($!)
done
trap 'kill "${busy[@]}" 2>/dev/null || true' EXIT

for i in $(seq "$runs"); do
	if ! out=$(./scripts/check-modules.sh "$binary" 2>&1); then
		echo "check-modules-stress: run $i of $runs failed: $out" >&2
		exit 1
	fi
done
echo "check-modules-stress: $runs runs passed with $(nproc) CPUs kept busy"
