// Command caddy is Caddy with its standard modules and the vnc_proxy plugin.
// It serves the demo, the tests and the benchmarks; production builds use
// xcaddy with xcaddy.json.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/vncgate/caddy-vnc-proxy"
)

func main() {
	caddycmd.Main()
}
