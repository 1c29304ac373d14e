#!/usr/bin/env bash
# Builds a production Caddy with xcaddy from xcaddy.json (make build), then
# checks that the binary has the plugin's modules. The plugin is given as
# module@v0.0.0=./: a version, so that Go does not ask the module proxy or
# the repository host for it, and the local checkout as its source.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r xcaddy_version < <(go run ./internal/buildmanifest/print xcaddy.json xcaddy_version)
mapfile -t args < <(go run ./internal/buildmanifest/print xcaddy.json args)
echo "xcaddy ${args[*]}"
go run "github.com/caddyserver/xcaddy/cmd/xcaddy@${xcaddy_version}" "${args[@]}"
read -r output < <(go run ./internal/buildmanifest/print xcaddy.json output)
./scripts/check-modules.sh "$output"
