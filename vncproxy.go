// Package vncproxy is a Caddy v2 plugin that puts browser consoles for
// virtual machines behind Caddy: noVNC in the browser speaks RFB over a
// WebSocket to the vnc_proxy handler, which maps a short-lived token to a VNC
// server and relays the bytes both ways.
//
// Importing this package registers the Caddy modules, so
//
//	xcaddy build --with github.com/vncgate/caddy-vnc-proxy
//
// builds a Caddy with the plugin. The handler lives in caddymodule; the token
// resolvers, free of Caddy, in tokenresolver.
package vncproxy

import (
	// Registers http.handlers.vnc_proxy and the resolver modules.
	_ "github.com/vncgate/caddy-vnc-proxy/caddymodule"
)
