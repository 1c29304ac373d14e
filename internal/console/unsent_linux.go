//go:build linux

package console

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// browserSocket is the TCP socket under the browser's connection (under
// TLS too), or nil for a stream or another kind of connection.
func browserSocket(b *browserConn) syscall.RawConn {
	tc, ok := b.socket().(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// socketUnsent returns how many bytes written to the browser's socket it has
// not yet taken (SIOCOUTQ), and whether that could be told.
func socketUnsent(b *browserConn) (int, bool) {
	rc := browserSocket(b)
	if rc == nil {
		return 0, false
	}
	n, ok := 0, false
	_ = rc.Control(func(fd uintptr) {
		v, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		n, ok = v, err == nil
	})
	return n, ok
}

// socketTaken returns how many bytes the browser's end has acknowledged
// since the connection opened (TCP_INFO's bytes_acked), and whether that
// could be told. Unlike the session's byte counts, which move when a whole
// frame has been handed to the socket, it moves with every segment the
// browser takes, so a browser reading a large frame slowly is seen making
// progress.
func socketTaken(b *browserConn) (int64, bool) {
	rc := browserSocket(b)
	if rc == nil {
		return 0, false
	}
	var (
		n  int64
		ok bool
	)
	_ = rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			n, ok = int64(info.Bytes_acked), true
		}
	})
	return n, ok
}
