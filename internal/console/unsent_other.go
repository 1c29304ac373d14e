//go:build !linux

package console

// socketUnsent: without SIOCOUTQ, how much the browser has not yet taken cannot
// be told.
func socketUnsent(b *browserConn) (int, bool) { return 0, false }

// socketTaken: without TCP_INFO, how much the browser has taken is known a
// frame at a time only.
func socketTaken(b *browserConn) (int64, bool) { return 0, false }
