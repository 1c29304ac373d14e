package caddymodule

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/gorilla/websocket"
)

// WebSocket over HTTP/2 (RFC 8441) and HTTP/3 (RFC 9220): the browser
// sends an extended CONNECT with :protocol websocket, the proxy answers 200,
// and the request's stream carries the WebSocket frames both ways. The
// session is the same as over a hijacked HTTP/1.1 connection: gorilla reads
// the browser's frames (masking, control frames, fragmentation, the size
// limit, the close handshake), over a streamConn instead of a socket, and
// the session writes its own frames to it.

// isExtendedConnect reports whether r opens a WebSocket over HTTP/2 or
// HTTP/3. quic-go puts HTTP/3's :protocol in r.Proto; Go's HTTP/2 server
// keeps it as a header.
func isExtendedConnect(r *http.Request) bool {
	if r.Method != http.MethodConnect {
		return false
	}
	switch r.ProtoMajor {
	case 2:
		return strings.EqualFold(r.Header.Get(":protocol"), "websocket")
	case 3:
		return strings.EqualFold(r.Proto, "websocket")
	}
	return false
}

// streamKey stands in for the Sec-WebSocket-Key that extended CONNECT does
// not have (RFC 8441, section 5).
const streamKey = "dGhlIHNhbXBsZSBub25jZQ=="

// upgradeStream answers an extended CONNECT with 200 and returns the
// WebSocket over its stream. gorilla has no server side for a stream, but
// frames over any net.Conn: it gets the request in HTTP/1.1 form and a
// connection that drops its 101 answer, the 200 having gone out already.
func (h *Handler) upgradeStream(w http.ResponseWriter, r *http.Request) (*websocket.Conn, *streamConn, error) {
	if slices.Contains(websocket.Subprotocols(r), "binary") {
		w.Header().Set("Sec-WebSocket-Protocol", "binary")
	}
	w.WriteHeader(http.StatusOK)
	sc := newStreamConn(w, r)
	if _, err := sc.Write(nil); err != nil {
		return nil, nil, err
	}
	h1 := &http.Request{
		Method: http.MethodGet,
		Header: http.Header{
			"Connection":            {"Upgrade"},
			"Upgrade":               {"websocket"},
			"Sec-Websocket-Version": {"13"},
			"Sec-Websocket-Key":     {streamKey},
		},
	}
	ws, err := h.upgrader.Upgrade(streamHijacker{w, sc}, h1, nil)
	if err != nil {
		sc.Close()
		return nil, nil, err
	}
	return ws, sc, nil
}

// streamHijacker hands gorilla the stream as if it were a hijacked
// connection.
type streamHijacker struct {
	http.ResponseWriter
	sc *streamConn
}

func (h streamHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	bc := newBrowserConn(h.sc)
	bc.answered = true
	rw := bufio.NewReadWriter(bufio.NewReaderSize(h.sc, 16), bufio.NewWriterSize(io.Discard, 16))
	return bc, rw, nil
}

// streamConn is an HTTP/2 or HTTP/3 request stream as a net.Conn: reads
// from the request body, writes to the response, each write flushed. The
// request's handler waits in serve until the connection is closed, since
// the stream ends when it returns; nothing touches the request after that.
type streamConn struct {
	body   io.ReadCloser
	w      http.ResponseWriter      // the innermost writer
	rc     *http.ResponseController // for writes: w's
	readRC *http.ResponseController // for read deadlines: Caddy's writer's
	local  net.Addr
	remote net.Addr

	mu     sync.Mutex
	closed bool
	reset  bool
	inUse  sync.WaitGroup // reads, writes and deadlines under way
	done   chan struct{}  // closed by Close
}

// noIdleTimeout replaces Caddy's read idle timeout on a console's stream.
const noIdleTimeout = 100 * 365 * 24 * time.Hour

// newStreamConn makes the stream of r a connection. The session bounds its
// own waits (pings, stall checks, idle_timeout), so Caddy's read and write
// idle timeouts (read_idle_timeout, write_idle_timeout), which would end a
// quiet console, do not apply to it: the body is read past Caddy's idle
// reader when nothing else wraps it (and with the reader's timeout
// overridden when something does), and frames are written past Caddy's
// response writer wrappers, whose deadlines are not safe to set while
// another goroutine writes. Read deadlines go through Caddy's writer,
// which hands them to its idle reader.
func newStreamConn(w http.ResponseWriter, r *http.Request) *streamConn {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil {
		local = streamAddr(r.Host)
	}
	body := r.Body
	if reader, _ := caddyhttp.IdleTimeoutsFromContext(r.Context()); reader != nil {
		reader.Override(noIdleTimeout, 0)
		if body == io.ReadCloser(reader) {
			body = reader.ReadCloser
		}
	}
	inner := innermostWriter(w)
	return &streamConn{
		body:   body,
		w:      inner,
		rc:     http.NewResponseController(inner),
		readRC: http.NewResponseController(w),
		local:  local,
		remote: streamAddr(r.RemoteAddr),
		done:   make(chan struct{}),
	}
}

var errStreamClosed = errors.New("stream closed")

// enter begins an operation on the stream unless it is closed; leave ends
// it.
func (c *streamConn) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.inUse.Add(1)
	return true
}

func (c *streamConn) leave() { c.inUse.Done() }

func (c *streamConn) Read(p []byte) (int, error) {
	if !c.enter() {
		return 0, errStreamClosed
	}
	defer c.leave()
	return c.body.Read(p)
}

// Write writes p and flushes it: each frame goes out as it is written.
func (c *streamConn) Write(p []byte) (int, error) {
	if !c.enter() {
		return 0, errStreamClosed
	}
	defer c.leave()
	n, err := c.w.Write(p)
	if err == nil {
		err = c.rc.Flush()
	}
	return n, err
}

// CloseWrite flushes what was written: a stream's end follows when the
// handler returns, after lingerClose has drained the browser's answer.
func (c *streamConn) CloseWrite() error {
	_, err := c.Write(nil)
	return err
}

// Close ends the stream: operations under way are cut short (a deadline in
// the past) and the handler returns once they have.
func (c *streamConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.inUse.Add(1)
	c.mu.Unlock()
	now := time.Now()
	_ = c.readRC.SetReadDeadline(now)
	_ = c.rc.SetWriteDeadline(now)
	c.inUse.Done()
	close(c.done)
	return nil
}

// abort resets the stream instead of ending it.
func (c *streamConn) abort() {
	c.mu.Lock()
	c.reset = true
	c.mu.Unlock()
	c.Close()
}

// serve waits, in the request's handler, until the connection is closed
// and nothing uses the request any longer. A reset is an abort of the
// handler, which Go's HTTP/2 server and quic-go's HTTP/3 server answer
// with a stream reset.
func (c *streamConn) serve() {
	<-c.done
	c.inUse.Wait()
	c.mu.Lock()
	reset := c.reset
	c.mu.Unlock()
	if reset {
		panic(http.ErrAbortHandler)
	}
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

func (c *streamConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *streamConn) SetReadDeadline(t time.Time) error {
	if !c.enter() {
		return errStreamClosed
	}
	defer c.leave()
	return c.readRC.SetReadDeadline(t)
}

func (c *streamConn) SetWriteDeadline(t time.Time) error {
	if !c.enter() {
		return errStreamClosed
	}
	defer c.leave()
	return c.rc.SetWriteDeadline(t)
}

// streamAddr is an address as the request gives it.
type streamAddr string

func (a streamAddr) Network() string { return "tcp" }
func (a streamAddr) String() string  { return string(a) }

// Consoles on streams and the process's exit: Caddy's servers wait for
// their requests to finish before the exit hooks run, so an exit watcher
// ends every console, with 1001, as soon as the exit begins. It runs while
// stream consoles are live.
var exitWatch struct {
	mu       sync.Mutex
	streams  int
	watching bool
}

// holdStream counts a console on a stream until release is called, and
// starts the exit watcher for the first.
func holdStream() (release func()) {
	exitWatch.mu.Lock()
	exitWatch.streams++
	if !exitWatch.watching {
		exitWatch.watching = true
		go watchExit()
	}
	exitWatch.mu.Unlock()
	return func() {
		exitWatch.mu.Lock()
		exitWatch.streams--
		exitWatch.mu.Unlock()
	}
}

const exitPollInterval = 100 * time.Millisecond

func watchExit() {
	t := time.NewTicker(exitPollInterval)
	defer t.Stop()
	for range t.C {
		if caddy.Exiting() {
			sessions.closeAll(websocket.CloseGoingAway, "server shutting down")
			return
		}
		exitWatch.mu.Lock()
		none := exitWatch.streams == 0
		if none {
			exitWatch.watching = false
		}
		exitWatch.mu.Unlock()
		if none {
			return
		}
	}
}

// Interface guards
var (
	_ net.Conn      = (*streamConn)(nil)
	_ http.Hijacker = streamHijacker{}
)
