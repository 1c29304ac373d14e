//go:build !linux

package console

// unsent: without SIOCOUTQ, how much the browser has not yet taken cannot
// be told.
func (b *browserConn) unsent() (int, bool) { return 0, false }
