#!/usr/bin/env bash
# The demo (`make demo`): builds Caddy with the vnc_proxy plugin and the demo
# VNC server, starts both, and prints the address of a browser console for it.
# Ctrl-C stops everything. Nothing is written outside the repository's bin/
# and demo/node_modules/ except one temporary directory, removed at the end.
#
#   CONSOLE=serial   a serial console instead (xterm.js): a real Linux guest
#                    booted by QEMU with its shell on a serial port (needs the
#                    Debian packages qemu-system-x86, busybox-static and
#                    linux-image-amd64)
#   CONSOLE=spice    a SPICE console instead: Debian's spice-html5 page
#                    (package spice-html5) on QEMU's SPICE server, a diskless
#                    machine showing its BIOS screen (package qemu-system-x86)
#   PORT=8080        the port Caddy serves the console page on (localhost only)
#   HTTPS=1          serve https:// with a certificate from Caddy's internal CA
#                    (the browser warns about it: the CA is not installed)
#   VNC_PASSWORD=pw  make the demo VNC server ask for this password
#   RECORD=1         record every console into the temporary directory and
#                    serve the recordings with the player (player.html)
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
console="${CONSOLE:-vnc}"
case "$console" in
vnc | serial | spice) ;;
*) echo "demo: CONSOLE=$console: want vnc, serial or spice" >&2; exit 2 ;;
esac
# Debian's spice-html5 package (CONSOLE=spice), as nova-spicehtml5proxy
# serves it.
spice_html5=/usr/share/spice-html5
scheme=http
[ -n "$https" ] && [ "$https" != 0 ] && scheme=https

for tool in go npm; do
	if ! command -v "$tool" >/dev/null; then
		echo "demo: '$tool' is needed and not installed" >&2
		exit 1
	fi
done

# The serial guest's programs, checked before anything is built: the
# packages to install are the first thing to know.
if [ "$console" = serial ]; then
	missing=()
	command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
	# The guest has no C library: busybox must be Debian's statically linked
	# one (ldd succeeds on a dynamically linked program only).
	busybox="$(command -v busybox || true)"
	if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
		missing+=(busybox-static)
	fi
	compgen -G '/boot/vmlinuz-*' >/dev/null || missing+=(linux-image-amd64)
	if [ ${#missing[@]} -gt 0 ]; then
		echo "demo: CONSOLE=serial boots a Linux guest with QEMU; install the Debian package(s) ${missing[*]}" >&2
		echo "      (sudo apt-get install ${missing[*]})" >&2
		exit 1
	fi
	target=serialguest
elif [ "$console" = spice ]; then
	missing=()
	command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
	[ -f "$spice_html5/spice_auto.html" ] || missing+=(spice-html5)
	if [ ${#missing[@]} -gt 0 ]; then
		echo "demo: CONSOLE=spice shows QEMU's SPICE console in Debian's spice-html5 page; install the Debian package(s) ${missing[*]}" >&2
		echo "      (sudo apt-get install ${missing[*]})" >&2
		exit 1
	fi
	target=qemu
else
	target=vncdemo
fi

cd "$root"
if [ "$target" = qemu ]; then
	echo "demo: building bin/caddy"
else
	echo "demo: building bin/caddy and bin/$target"
	go build -o "bin/$target" "./cmd/$target"
fi
go build -o bin/caddy ./cmd/caddy

# noVNC and xterm.js, pinned by demo/package-lock.json; reinstalled only when
# the lock changed.
if [ ! -f demo/node_modules/@novnc/novnc/core/rfb.js ] ||
	[ ! -f demo/node_modules/@xterm/xterm/lib/xterm.mjs ] ||
	[ demo/package-lock.json -nt demo/node_modules/.package-lock.json ]; then
	echo "demo: installing noVNC and xterm.js (npm ci)"
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

if [ "$target" = qemu ]; then
	# A diskless machine with a QXL card, its SPICE server on a free
	# loopback port without a password (the token is the credential). QEMU
	# prints nothing when it is ready: wait until the port accepts.
	spice_port="$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });')"
	qemu-system-x86_64 -display none -m 64 -nodefaults -vga qxl \
		-spice "port=$spice_port,addr=127.0.0.1,disable-ticketing=on" >"$tmp/$target.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 300); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$spice_port") 2>/dev/null; then
			echo "qemu listening on 127.0.0.1:$spice_port" >>"$tmp/$target.log"
			break
		fi
		kill -0 "${pids[0]}" 2>/dev/null || break
		sleep 0.1
	done
elif [ "$target" = serialguest ]; then
	# The guest: QEMU with the machine's first serial port on a TCP chardev
	# at a free port (serialguest prints it, then becomes QEMU).
	bin/serialguest -listen 127.0.0.1:0 -dir "$tmp" >"$tmp/$target.log" 2>&1 &
else
	# The demo VNC server on a port the kernel picks; it prints the address
	# once it accepts connections.
	# The password travels in the environment, not on the command line.
	VNCDEMO_PASSWORD="${VNC_PASSWORD:-}" bin/vncdemo -listen 127.0.0.1:0 -geometry 800x600 >"$tmp/$target.log" 2>&1 &
fi
pids+=($!)
vnc_addr=""
for _ in $(seq 100); do
	vnc_addr="$(sed -n "s/^$target listening on \([^ ]*\).*/\1/p" "$tmp/$target.log" | head -n1)"
	[ -n "$vnc_addr" ] && break
	if ! kill -0 "${pids[0]}" 2>/dev/null; then
		echo "demo: $target exited:" >&2
		cat "$tmp/$target.log" >&2
		exit 1
	fi
	sleep 0.1
done
if [ -z "$vnc_addr" ]; then
	echo "demo: $target did not start within 10s" >&2
	exit 1
fi

# A random console token, in websockify's token-file format.
token="$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
printf '# token: target\n%s: %s\n' "$token" "$vnc_addr" >"$tmp/tokens"

mkdir -p "$tmp/xdg-data" "$tmp/xdg-config" "$tmp/recordings"
# Recording is off unless RECORD=1: the handler imports this file.
record="${RECORD:-}"
if [ -n "$record" ] && [ "$record" != 0 ]; then
	printf 'record %s\n' "$tmp/recordings" >"$tmp/record.caddy"
else
	record=""
	printf '# recording off (RECORD=1 make demo turns it on)\n' >"$tmp/record.caddy"
fi
DEMO_RECORD_IMPORT="$tmp/record.caddy" \
	DEMO_RECORD_DIR="$tmp/recordings" \
	DEMO_SCHEME="$scheme" \
	DEMO_PORT="$port" \
	DEMO_DATA_DIR="$tmp" \
	DEMO_TOKEN_FILE="$tmp/tokens" \
	DEMO_SITE_DIR="$root/demo/site" \
	DEMO_NOVNC_DIR="$root/demo/node_modules/@novnc/novnc" \
	DEMO_XTERM_DIR="$root/demo/node_modules/@xterm/xterm" \
	DEMO_SPICE_HTML5_DIR="$spice_html5" \
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

if [ "$target" = qemu ]; then
	url="$scheme://localhost:$port/spice/spice_auto.html?token=$token&path=spice/websockify"
	cat <<EOF

  caddy-vnc-proxy demo: SPICE console

  Open the console:  $url

  Caddy ($root/bin/caddy, config demo/Caddyfile) serves Debian's spice-html5
  page from $spice_html5 at /spice/, and proxies /spice/websockify
  (protocol spice) to the SPICE server of a QEMU machine at $vnc_addr for
  that token. The page keeps the token in a cookie and opens one WebSocket
  per SPICE channel (main, display, inputs, cursor...): one console for the
  proxy. The machine has no disk: it shows its BIOS screen.
EOF
elif [ "$target" = serialguest ]; then
	url="$scheme://localhost:$port/serial.html?token=$token"
	cat <<EOF

  caddy-vnc-proxy demo: serial console

  Open the console:  $url

  Caddy ($root/bin/caddy, config demo/Caddyfile) serves the console page and
  xterm.js, and proxies /serial (protocol serial) to the serial port of a
  Linux guest that QEMU serves at $vnc_addr for that token. The guest takes
  10 to 40 seconds to boot; then press Enter in the page for its shell.
  A second tab with the same link is refused (409 console in use): a serial
  port serves one console at a time.
EOF
else
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
	if [ -n "$record" ]; then
		cat <<EOF
  Consoles are recorded (RECORD=1); once a console is closed, its recording
  plays in:          $scheme://localhost:$port/player.html
EOF
	fi
fi
[ "$scheme" = https ] && echo "  (The certificate comes from Caddy's internal CA, which is not installed: expect a browser warning.)"
cat <<EOF

  Ctrl-C stops everything. Caddy's log follows.

EOF

tail -n 0 -f "$tmp/caddy.log" &
pids+=($!)
# Run until Caddy or the console's target ends, or until Ctrl-C.
while kill -0 "$caddy_pid" 2>/dev/null && kill -0 "${pids[0]}" 2>/dev/null; do
	sleep 1
done
echo "demo: a server stopped; see the log above" >&2
exit 1
