#!/usr/bin/env bash
# Checks that a Caddy binary has the plugin's modules (make build runs it on
# the xcaddy binary). The module list is read whole before it is searched:
# `list-modules | grep -q` under pipefail fails at random, when grep exits at
# its first match and list-modules dies of SIGPIPE writing the rest.
set -euo pipefail
binary=${1:?usage: check-modules.sh CADDY_BINARY}
modules=(
	http.handlers.vnc_proxy
	http.vnc_proxy.resolvers.file
	http.vnc_proxy.resolvers.http
	http.vnc_proxy.resolvers.redis
	http.vnc_proxy.resolvers.jwt
	http.vnc_proxy.resolvers.nova
	admin.api.vnc_proxy
	vnc_proxy
)
listed=$("$binary" list-modules)
for m in "${modules[@]}"; do
	if ! grep -qx -- "$m" <<<"$listed"; then
		echo "check-modules: $binary lacks the module $m" >&2
		exit 1
	fi
done
version=$("$binary" version)
echo "$binary: ${version%%$'\n'*}, with the vnc_proxy modules"
