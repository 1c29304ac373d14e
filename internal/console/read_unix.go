//go:build unix

package console

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// pooledReader returns a function that waits for c's next bytes and reads
// them into a buffer from buffers (of relay buffers), after its
// frameHeaderRoom; the caller puts the buffer back there. The buffer is
// taken only once bytes are there, so a session whose VNC server is quiet
// holds none; reading is one non-blocking read(2), as in net.Conn.
func pooledReader(c net.Conn, buffers *sync.Pool) func() (*[]byte, int, error) {
	rc := rawConn(c)
	if rc == nil {
		return heldBufferReader(c, buffers)
	}
	var (
		bp   *[]byte
		n    int
		rerr error
	)
	readReady := func(fd uintptr) bool {
		b := buffers.Get().(*[]byte)
		for {
			n, rerr = syscall.Read(int(fd), (*b)[frameHeaderRoom:])
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			buffers.Put(b)
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

// waitsWithoutBuffer reports whether pooledReader(c) takes its buffer only
// once bytes are there, rather than holding it while it waits.
func waitsWithoutBuffer(c net.Conn) bool { return rawConn(c) != nil }

func rawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// pooledReadConn is the browser's connection as gorilla/websocket reads it
// (under TLS, as crypto/tls does): a read takes whatever the socket holds,
// up to a relay buffer's worth, in one read(2) into a pooled buffer and
// serves gorilla's reads (frame headers into its small buffer, payloads
// into the relay's) from there, so a 64 KiB message costs about one
// read(2) instead of one for its header and more for its payload. The
// buffer goes back to the pool once drained: an idle session holds none.
// Only gorilla's pump reads it. It embeds the net.Conn interface, not the
// *net.TCPConn, so that no ReadFrom or WriteTo goes past its buffer.
type pooledReadConn struct {
	net.Conn
	buffers *sync.Pool
	read    func() (*[]byte, int, error)
	bp      *[]byte
	buf     []byte // the unread bytes in *bp
}

// pooledReads wraps a plain TCP connection in a pooledReadConn reading
// into buffers from buffers; any other connection (TLS) is returned as it
// is.
func pooledReads(c net.Conn, buffers *sync.Pool) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok || CopyRelayOnly.Load() {
		return c
	}
	return &pooledReadConn{Conn: tc, buffers: buffers, read: pooledReader(tc, buffers)}
}

func (c *pooledReadConn) Read(p []byte) (int, error) {
	if len(c.buf) == 0 {
		bp, n, err := c.read()
		if n == 0 {
			if bp != nil {
				c.buffers.Put(bp)
			}
			return 0, err
		}
		c.bp, c.buf = bp, (*bp)[frameHeaderRoom:frameHeaderRoom+n]
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	if len(c.buf) == 0 {
		c.buffers.Put(c.bp)
		c.bp, c.buf = nil, nil
	}
	return n, nil
}
