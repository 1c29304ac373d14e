//go:build unix

package caddymodule

import (
	"net"
	"syscall"
)

// readinessWaiter returns a function that blocks until c has bytes to read,
// has reached EOF or has failed, without holding a read buffer while it
// waits. It returns nil for connections that do not expose their socket.
func readinessWaiter(c net.Conn) func() error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var peek [1]byte
	ready := func(fd uintptr) bool {
		for {
			_, _, err := syscall.Recvfrom(int(fd), peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch err {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // let the runtime's poller wait
			default:
				return true // data, EOF or an error: the next Read reports it
			}
		}
	}
	return func() error { return rc.Read(ready) }
}
