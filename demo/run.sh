#!/usr/bin/env bash
# The demo (`make demo`): builds Caddy with the vnc_proxy plugin and the demo
# VNC server, starts both, and prints the address of a browser console for it.
# Ctrl-C stops everything. Nothing is written outside the repository's bin/
# and demo/node_modules/ except one temporary directory, removed at the end.
#
#   PORT=8080        the port Caddy serves the console page on (localhost only)
#   HTTPS=1          serve https:// with a certificate from Caddy's internal CA
#                    (the browser warns about it: the CA is not installed)
#   VNC_PASSWORD=pw  make the demo VNC server ask for this password
set -euo pipefail

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

https="${HTTPS:-}"
for arg in "$@"; do
	case "$arg" in
	--https) https=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "demo: unknown argument $arg (try --help)" >&2; exit 2 ;;
	esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
port="${PORT:-8080}"
scheme=http
[ -n "$https" ] && [ "$https" != 0 ] && scheme=https

for tool in go npm; do
	if ! command -v "$tool" >/dev/null; then
		echo "demo: '$tool' is needed and not installed" >&2
		exit 1
	fi
done

cd "$root"
echo "demo: building bin/caddy and bin/vncdemo"
go build -o bin/caddy ./cmd/caddy
go build -o bin/vncdemo ./cmd/vncdemo

# noVNC, pinned by demo/package-lock.json; reinstalled only when the lock changed.
if [ ! -f demo/node_modules/@novnc/novnc/core/rfb.js ] ||
	[ demo/package-lock.json -nt demo/node_modules/.package-lock.json ]; then
	echo "demo: installing noVNC (npm ci)"
	(cd demo && npm ci --no-audit --no-fund --loglevel=error)
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/caddy-vnc-demo.XXXXXX")"
pids=()
cleanup() {
	trap - EXIT INT TERM
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo; echo "demo: stopping"; exit 0' INT TERM

# The demo VNC server on a port the kernel picks; it prints the address once
# it accepts connections.
# The password travels in the environment, not on the command line.
VNCDEMO_PASSWORD="${VNC_PASSWORD:-}" bin/vncdemo -listen 127.0.0.1:0 -geometry 800x600 >"$tmp/vncdemo.log" 2>&1 &
pids+=($!)
vnc_addr=""
for _ in $(seq 100); do
	vnc_addr="$(sed -n 's/^vncdemo listening on \([^ ]*\).*/\1/p' "$tmp/vncdemo.log" | head -n1)"
	[ -n "$vnc_addr" ] && break
	if ! kill -0 "${pids[0]}" 2>/dev/null; then
		echo "demo: vncdemo exited:" >&2
		cat "$tmp/vncdemo.log" >&2
		exit 1
	fi
	sleep 0.1
done
if [ -z "$vnc_addr" ]; then
	echo "demo: vncdemo did not start within 10s" >&2
	exit 1
fi

# A random console token, in websockify's token-file format.
token="$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
printf '# token: target\n%s: %s\n' "$token" "$vnc_addr" >"$tmp/tokens"

mkdir -p "$tmp/xdg-data" "$tmp/xdg-config"
DEMO_SCHEME="$scheme" \
	DEMO_PORT="$port" \
	DEMO_DATA_DIR="$tmp" \
	DEMO_TOKEN_FILE="$tmp/tokens" \
	DEMO_SITE_DIR="$root/demo/site" \
	DEMO_NOVNC_DIR="$root/demo/node_modules/@novnc/novnc" \
	XDG_DATA_HOME="$tmp/xdg-data" \
	XDG_CONFIG_HOME="$tmp/xdg-config" \
	bin/caddy run --adapter caddyfile --config demo/Caddyfile >"$tmp/caddy.log" 2>&1 &
caddy_pid=$!
pids+=("$caddy_pid")

ready=""
for _ in $(seq 100); do
	if ! kill -0 "$caddy_pid" 2>/dev/null; then
		break
	fi
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		# Over HTTPS, also wait for the certificate from the internal CA.
		if [ "$scheme" = http ] || ! command -v curl >/dev/null ||
			curl -ksf -o /dev/null "https://localhost:$port/"; then
			ready=1
			break
		fi
	fi
	sleep 0.1
done
if [ -z "$ready" ]; then
	echo "demo: Caddy did not start on port $port:" >&2
	cat "$tmp/caddy.log" >&2
	if grep -q "address already in use" "$tmp/caddy.log"; then
		echo "demo: port $port is taken; choose another, e.g. PORT=8081 make demo" >&2
	fi
	exit 1
fi

url="$scheme://localhost:$port/?token=$token"
cat <<EOF

  caddy-vnc-proxy demo

  Open the console:  $url

  Caddy ($root/bin/caddy, config demo/Caddyfile) serves the console page and
  noVNC, and proxies /websockify to the demo VNC server at $vnc_addr for that
  token. Click or type in the console to draw on the remote screen.
  A wrong token shows what a user gets for an invalid link:
                     $scheme://localhost:$port/?token=wrong
EOF
[ "$scheme" = https ] && echo "  (The certificate comes from Caddy's internal CA, which is not installed: expect a browser warning.)"
cat <<EOF

  Ctrl-C stops everything. Caddy's log follows.

EOF

tail -n 0 -f "$tmp/caddy.log" &
pids+=($!)
# Run until Caddy or vncdemo ends, or until Ctrl-C.
while kill -0 "$caddy_pid" 2>/dev/null && kill -0 "${pids[0]}" 2>/dev/null; do
	sleep 1
done
echo "demo: a server stopped; see the log above" >&2
exit 1
