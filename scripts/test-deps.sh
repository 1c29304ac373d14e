#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine with Go and Node:
# Redis, TigerVNC, QEMU, websockify, Chromium, SPICE and serial console
# fixtures, TigerVNC's viewer under Xvfb, and the npm packages from the
# lock files. Already-installed packages are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
	redis-server               # tokenresolver and end-to-end tests: a real Redis
	tigervnc-standalone-server # Xvnc: a real VNC server
	tigervnc-tools             # vncpasswd, for VNC password tests
	qemu-system-x86            # QEMU's VNC server, the one OpenStack uses
	websockify                 # side-by-side comparison in tests and bench
	chromium                   # the browser for e2e/
	openssl                    # e2e/: certificates for VeNCrypt X.509
	novnc                      # e2e/: Debian's noVNC app, as OpenStack serves it
	spice-html5                # SPICE consoles in the browser, as nova-spicehtml5proxy serves them
	busybox-static             # the serial console tests' guest: its initramfs
	linux-image-amd64          # the serial console tests' guest: Debian's kernel
	tigervnc-viewer            # native VNC clients: TigerVNC's vncviewer
	xvfb                       # a headless X server for vncviewer
	imagemagick                # screenshots of the Xvfb screen (import)
	xclip                      # the clipboard of Xvnc's display, for the RFB framer's real streams
	x11-xserver-utils          # xsetroot: changing Xvnc's picture while the player's test records it
)

missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	[ "$status" = "install ok installed" ] || missing+=("$p")
done
if ((${#missing[@]})); then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	echo "test-deps: installing ${missing[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

for dir in demo e2e bench; do
	if [ -f "$dir/package-lock.json" ]; then
		(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
	fi
done
