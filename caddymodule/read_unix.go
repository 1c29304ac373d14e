//go:build unix

package caddymodule

import (
	"io"
	"net"
	"os"
	"syscall"
)

// pooledReader returns a function that waits for c's next bytes and reads
// them into a buffer from relayBuffers, after its frameHeaderRoom; the
// caller puts the buffer back. The buffer is taken only once bytes are
// there, so a session whose VNC server is quiet holds none; reading is one
// non-blocking read(2), as in net.Conn.
func pooledReader(c net.Conn) func() (*[]byte, int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return heldBufferReader(c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return heldBufferReader(c)
	}
	var (
		bp   *[]byte
		n    int
		rerr error
	)
	readReady := func(fd uintptr) bool {
		b := relayBuffers.Get().(*[]byte)
		for {
			n, rerr = syscall.Read(int(fd), (*b)[frameHeaderRoom:])
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			relayBuffers.Put(b)
			return false // the runtime's poller waits for the socket
		}
		bp = b
		return true
	}
	return func() (*[]byte, int, error) {
		bp, n, rerr = nil, 0, nil
		if err := rc.Read(readReady); err != nil {
			return bp, 0, err
		}
		switch {
		case rerr != nil:
			return bp, 0, os.NewSyscallError("read", rerr)
		case n == 0:
			return bp, 0, io.EOF
		}
		return bp, n, nil
	}
}
