//go:build linux

package console

import (
	"net"

	"golang.org/x/sys/unix"
)

// socketUnsent returns how many bytes written to the browser's socket it has
// not yet taken (SIOCOUTQ), and whether that could be told.
func socketUnsent(b *browserConn) (int, bool) {
	tc, ok := b.socket().(*net.TCPConn)
	if !ok {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	n, ok := 0, false
	_ = rc.Control(func(fd uintptr) {
		v, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		n, ok = v, err == nil
	})
	return n, ok
}
