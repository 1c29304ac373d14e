package console

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// NewStream makes a connection of an HTTP/2 or HTTP/3 request's stream,
// the request having been answered 200 already: reads from body, frames
// written to w (the server's own writer, under any wrappers) and flushed
// with rc (w's controller), read deadlines set with readDeadlines (which
// may go through wrappers that keep their own).
func NewStream(body io.ReadCloser, w http.ResponseWriter, rc, readDeadlines *http.ResponseController, local, remote net.Addr) *Stream {
	return &Stream{body: body, w: w, rc: rc, readRC: readDeadlines, local: local, remote: remote, done: make(chan struct{})}
}

// BrowserConn is the stream as the connection gorilla's upgrader takes:
// its first write, gorilla's 101 answer, is dropped.
func (c *Stream) BrowserConn() net.Conn {
	bc := newBrowserConn(c)
	bc.answered = true
	bc.transport = c
	return bc
}

// Addr is an address as a request gives it.
type Addr string

func (a Addr) Network() string { return "tcp" }
func (a Addr) String() string  { return string(a) }

// Stream is an HTTP/2 or HTTP/3 request stream as a net.Conn: reads
// from the request body, writes to the response, each write flushed. The
// request's handler waits in Serve until the connection is closed, since
// the stream ends when it returns; nothing touches the request after that.
type Stream struct {
	body   io.ReadCloser
	w      http.ResponseWriter      // the innermost writer
	rc     *http.ResponseController // for writes: w's
	readRC *http.ResponseController // for read deadlines
	local  net.Addr
	remote net.Addr

	mu      sync.Mutex
	closed  bool
	reset   bool
	writing int            // writes under way
	inUse   sync.WaitGroup // reads, writes and deadlines under way
	done    chan struct{}  // closed by Close
	// pending is how many bytes of the write under way the server's
	// writer has not yet taken: what a socket's SIOCOUTQ tells, for the
	// session's waits on a browser that reads slowly.
	pending atomic.Int64
}

// streamChunk is how much of a write goes to the server's writer at once,
// so that pending moves while a large frame goes out.
const streamChunk = 16 << 10

var errStreamClosed = errors.New("stream closed")

// enter begins an operation on the stream unless it is closed; leave ends
// it.
func (c *Stream) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.inUse.Add(1)
	return true
}

func (c *Stream) leave() { c.inUse.Done() }

func (c *Stream) Read(p []byte) (int, error) {
	if !c.enter() {
		return 0, errStreamClosed
	}
	defer c.leave()
	return c.body.Read(p)
}

// Write writes p and flushes it: each frame goes out as it is written.
func (c *Stream) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, errStreamClosed
	}
	c.writing++
	c.inUse.Add(1)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.writing--
		c.mu.Unlock()
		c.inUse.Done()
	}()
	n := 0
	for n < len(p) {
		c.pending.Store(int64(len(p) - n))
		k, err := c.w.Write(p[n:min(len(p), n+streamChunk)])
		n += k
		if err != nil {
			c.pending.Store(0)
			return n, err
		}
	}
	c.pending.Store(0)
	return n, c.rc.Flush()
}

// CloseWrite flushes what was written: a stream's end follows when the
// handler returns, after lingerClose has drained the browser's answer.
func (c *Stream) CloseWrite() error {
	_, err := c.Write(nil)
	return err
}

// Close ends the stream: operations under way are cut short (a deadline in
// the past) and the handler returns once they have. With no write under
// way, what was written is still delivered: the write deadline stays
// (over HTTP/2 one in the past resets the stream).
func (c *Stream) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	writing := c.writing > 0
	c.inUse.Add(1)
	c.mu.Unlock()
	now := time.Now()
	_ = c.readRC.SetReadDeadline(now)
	if writing {
		_ = c.rc.SetWriteDeadline(now)
	}
	c.inUse.Done()
	close(c.done)
	return nil
}

// abort resets the stream instead of ending it.
func (c *Stream) abort() {
	c.mu.Lock()
	c.reset = true
	c.mu.Unlock()
	c.Close()
}

// Serve waits, in the request's handler, until the connection is closed
// and nothing uses the request any longer. A reset is an abort of the
// handler, which Go's HTTP/2 server and quic-go's HTTP/3 server answer
// with a stream reset.
func (c *Stream) Serve() {
	<-c.done
	c.inUse.Wait()
	c.mu.Lock()
	reset := c.reset
	c.mu.Unlock()
	if reset {
		panic(http.ErrAbortHandler)
	}
}

func (c *Stream) LocalAddr() net.Addr  { return c.local }
func (c *Stream) RemoteAddr() net.Addr { return c.remote }

func (c *Stream) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *Stream) SetReadDeadline(t time.Time) error {
	if !c.enter() {
		return errStreamClosed
	}
	defer c.leave()
	return c.readRC.SetReadDeadline(t)
}

func (c *Stream) SetWriteDeadline(t time.Time) error {
	if !c.enter() {
		return errStreamClosed
	}
	defer c.leave()
	return c.rc.SetWriteDeadline(t)
}

// Interface guard
var _ net.Conn = (*Stream)(nil)

// unsent is what remains of the write under way: what the HTTP/2 or
// QUIC connection has not yet taken.
func (c *Stream) unsent() (int, bool) { return int(c.pending.Load()), true }

// taken is not known for a stream; unsent shows its progress.
func (c *Stream) taken() (int64, bool) { return 0, false }

// giveUp ends the stream as usual: the close frame's bytes were handed to
// the HTTP/2 or QUIC connection, which still delivers them after the
// stream's end, where a stream reset would discard them; flow control
// bounds what the connection holds meanwhile.
func (c *Stream) giveUp() { c.Close() }

// Interface guard
var _ transport = (*Stream)(nil)
