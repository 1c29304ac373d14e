#!/usr/bin/env bash
# Builds a production Caddy with xcaddy from xcaddy.json (make build).
# GOPRIVATE keeps the Go module proxy from being asked for this module, which
# it does not serve: xcaddy builds it from the local checkout instead.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r xcaddy_version < <(go run ./internal/buildmanifest/print xcaddy.json xcaddy_version)
mapfile -t args < <(go run ./internal/buildmanifest/print xcaddy.json args)
export GOPRIVATE="${GOPRIVATE:+$GOPRIVATE,}github.com/vncgate"
echo "xcaddy ${args[*]}"
go run "github.com/caddyserver/xcaddy/cmd/xcaddy@${xcaddy_version}" "${args[@]}"
