//go:build !linux

package console

// socketUnsent: without SIOCOUTQ, how much the browser has not yet taken cannot
// be told.
func socketUnsent(b *browserConn) (int, bool) { return 0, false }
