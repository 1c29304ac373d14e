//go:build !unix

package caddymodule

import "net"

// readinessWaiter is unavailable here: pumps hold their buffer while they
// wait for data.
func readinessWaiter(net.Conn) func() error { return nil }
