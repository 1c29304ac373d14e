#!/usr/bin/env bash
# `make bench`: builds Caddy with the plugin and the harness, then measures
# vnc_proxy against direct TCP and websockify and writes bench/results/.
# Extra arguments go to the harness, e.g. ./bench/run.sh -quick, or
# BENCHFLAGS="-runs 3" make bench. See ./bin/vncbench -h.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/caddy ./cmd/caddy
go build -o bin/vncbench ./bench/cmd/vncbench
# shellcheck disable=SC2086
args=(${BENCHFLAGS:-} "$@")
cmdline="./bench/run.sh ${args[*]}"
exec ./bin/vncbench -cmdline "${cmdline% }" "${args[@]}"
