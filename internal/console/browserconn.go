package console

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// browserConn is the browser's connection as gorilla/websocket sees it.
// Reads pass through (to a pooledReadConn on a plain socket). Writes are
// gorilla's own: the handshake response, and the close frames it sends by
// itself for a protocol error or an oversized message. They take the
// session's write lock, like the session's data and control frames, so no
// frame lands inside another, and nothing is written after a close frame.
type browserConn struct {
	net.Conn          // for reading
	sock     net.Conn // the connection itself, for writing

	// mu orders every frame written to the browser: each is one write of
	// sock under mu, and none follows the close frame.
	mu sync.Mutex
	// closeSent: no frame may follow, because a close frame was written or
	// a write failed part-way. Set under mu; read anywhere.
	closeSent atomic.Bool
	// answered: the request was answered already (101 by the HTTP/1.1
	// server, 200 on an HTTP/2 or HTTP/3 stream), and gorilla's 101, its
	// first write, is dropped.
	answered bool
	// tls is the socket under sock when sock is a TLS connection: it
	// gathers a data frame's records into one write (writeFrame).
	tls *tlsSocket
	// transport is what carries the frames: a hijacked socket or an
	// HTTP/2 or HTTP/3 stream, asked at a console's end what the browser
	// has taken and how to let go of it.
	transport transport
}

// transport is what carries a WebSocket's frames to the browser: a
// hijacked HTTP/1.1 socket (plain or TLS), or the stream of an extended
// CONNECT over HTTP/2 or HTTP/3. A console's end asks it what the browser
// has not taken yet and how to let go of the browser.
type transport interface {
	// unsent returns how many bytes written to the browser it has not
	// taken, and whether that could be told.
	unsent() (int, bool)
	// taken returns how many bytes the browser has acknowledged since the
	// connection opened, and whether that could be told.
	taken() (int64, bool)
	// abort drops a browser that cannot take a close frame.
	abort()
	// giveUp drops a browser that has not answered the close frame sent
	// to it.
	giveUp()
}

// socketTransport is a hijacked socket as a transport.
type socketTransport struct{ b *browserConn }

// unsent is what the socket's kernel still holds (SIOCOUTQ, where it can
// tell).
func (t socketTransport) unsent() (int, bool) { return socketUnsent(t.b) }

// taken is what the browser's end acknowledged (TCP_INFO, where it can
// tell): unlike the session's byte counts, which move when a whole frame
// has been handed to the socket, it moves with every segment the browser
// takes.
func (t socketTransport) taken() (int64, bool) { return socketTaken(t.b) }

// abort resets the connection, so that the kernel frees the bytes queued
// for the browser at once rather than holding them, in an orphaned
// socket, for minutes of zero-window probes; and closes TLS without the
// close_notify alert, which would wait behind them.
func (t socketTransport) abort() {
	raw := t.b.socket()
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	raw.Close()
	t.b.sock.Close()
}

// giveUp resets the socket: the close wait watched its unsent bytes, and a
// browser that takes none holds kernel memory.
func (t socketTransport) giveUp() { t.abort() }

func newBrowserConn(c net.Conn) *browserConn {
	var b *browserConn
	if tc, ok := c.(*tls.Conn); ok {
		if ts := underTLS(tc); ts != nil {
			b = &browserConn{Conn: c, sock: c, tls: ts}
		}
	}
	if b == nil {
		b = &browserConn{Conn: pooledReads(c, &relayBuffers), sock: c}
	}
	b.transport = socketTransport{b}
	return b
}

// writeLocked is the one way bytes go to the browser: the caller holds
// mu, so that no frame lands inside another; nothing goes after a close
// frame (last: the write is one); busy, when given, marks a write under
// way for the stall check; and a write that fails part-way leaves a frame
// cut short, so nothing may follow it either.
func (b *browserConn) writeLocked(busy *atomic.Bool, last bool, write func() error) error {
	if b.closeSent.Load() {
		return errCloseSent
	}
	if busy != nil {
		busy.Store(true)
		defer busy.Store(false)
	}
	err := write()
	if err != nil || last {
		b.closeSent.Store(true)
	}
	return err
}

// writeFrame writes a data frame; the caller holds mu. Over TLS the
// frame's records go out in one write rather than one each.
func (b *browserConn) writeFrame(p []byte) error {
	if b.tls == nil {
		_, err := b.sock.Write(p)
		return err
	}
	b.tls.gather()
	_, err := b.sock.Write(p)
	if serr := b.tls.send(); err == nil {
		err = serr
	}
	return err
}

// socket is the connection under TLS and the wrappers of this package,
// for what only a socket can do (a reset, SIOCOUTQ).
func (b *browserConn) socket() net.Conn {
	if b.tls != nil {
		return b.tls.Conn
	}
	if tc, ok := b.sock.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return b.sock
}

// NewBrowserConn is a hijacked HTTP/1.1 connection as the connection
// gorilla's upgrader takes, for New.
func NewBrowserConn(c net.Conn) net.Conn { return newBrowserConn(c) }

// NewAnsweredBrowserConn is NewBrowserConn for a connection whose HTTP
// server has sent the 101 answer already (through its own writer, so that
// its access log records it): gorilla's 101, its first write, is dropped.
// early is what the server had read past the request when it was
// hijacked: a browser may send its first message as soon as it has the
// 101, and those bytes are the WebSocket's.
func NewAnsweredBrowserConn(c net.Conn, early []byte) net.Conn {
	bc := newBrowserConn(c)
	bc.answered = true
	if len(early) > 0 {
		bc.Conn = &earlyReads{Conn: bc.Conn, early: early}
	}
	return bc
}

// earlyReads reads early before the connection itself.
type earlyReads struct {
	net.Conn
	early []byte
}

func (e *earlyReads) Read(p []byte) (int, error) {
	if len(e.early) > 0 {
		n := copy(p, e.early)
		e.early = e.early[n:]
		return n, nil
	}
	return e.Conn.Read(p)
}

// SetWriteDeadline ignores gorilla's deadlines: the one it sets before its
// own close frame would cut short the data frame in flight on the same
// socket. The session bounds every write itself, and its stall check
// bounds the wait for the lock.
func (b *browserConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only, for the same reason.
func (b *browserConn) SetDeadline(t time.Time) error { return b.Conn.SetReadDeadline(t) }

// closeFrameStart is the first byte of a final close frame.
const closeFrameStart = 0x80 | 0x8

// Write is for gorilla only: the session writes under mu itself.
func (b *browserConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.answered && !b.closeSent.Load() {
		b.answered = false
		return len(p), nil
	}
	// gorilla writes each control frame in one Write.
	var n int
	err := b.writeLocked(nil, len(p) > 0 && p[0] == closeFrameStart, func() (err error) {
		n, err = b.sock.Write(p)
		return err
	})
	return n, err
}

// abort drops a browser that cannot take a close frame (gone, or not
// reading).
func (b *browserConn) abort() { b.transport.abort() }

// unsent returns how many bytes written to the browser it has not yet
// taken, and whether that could be told.
func (b *browserConn) unsent() (int, bool) { return b.transport.unsent() }

// taken returns how many bytes the browser has acknowledged, and whether
// that could be told.
func (b *browserConn) taken() (int64, bool) { return b.transport.taken() }

// giveUp drops a browser that has not answered the close frame sent to it.
func (b *browserConn) giveUp() { b.transport.giveUp() }

// lingerClose closes the connection after a close frame was sent: it shuts
// down the writing side, so the close frame goes out with a FIN, and reads
// and discards what the browser still sends until it closes, so that
// unread input does not make the kernel answer with a reset that would
// discard the close frame at the browser. It waits up to grace once the
// browser has taken every byte; before that, as long as the browser takes
// some within each stall (a browser reading its backlog slowly gets its
// tail, then the close frame).
func (b *browserConn) lingerClose(grace, stall time.Duration) {
	type closeWriter interface{ CloseWrite() error }
	cw, ok := b.sock.(closeWriter)
	if !ok {
		b.sock.Close()
		return
	}
	if tc, isTLS := b.sock.(*tls.Conn); isTLS {
		// A TLS close_notify must not wait behind a browser that does
		// not read.
		_ = tc.SetWriteDeadline(time.Now().Add(grace))
	}
	if cw.CloseWrite() == nil {
		b.drain(grace, stall)
	}
	b.sock.Close()
}

// drain reads and discards what the browser sends until it closes its side
// or fails, or until it has had grace to do so: reckoned from when it had
// taken everything written to it, or from its last progress while bytes
// still wait for it, for up to stall.
func (b *browserConn) drain(grace, stall time.Duration) {
	var buf [512]byte
	seen, _ := b.taken()
	lastLeft, _ := b.unsent()
	moved := time.Now()
	for {
		_ = b.sock.SetReadDeadline(time.Now().Add(grace))
		var err error
		for err == nil {
			_, err = b.sock.Read(buf[:])
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return
		}
		left, ok := b.unsent()
		if !ok || left == 0 {
			return
		}
		if now, _ := b.taken(); now != seen || left < lastLeft {
			seen, moved = now, time.Now()
		} else if time.Since(moved) >= stall {
			return
		}
		lastLeft = left
	}
}

// Interface guard
var _ io.Writer = (*browserConn)(nil)
