package caddymodule

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
)

// WebSocket over HTTP/2 (RFC 8441) and HTTP/3 (RFC 9220): the browser
// sends an extended CONNECT with :protocol websocket, the proxy answers 200,
// and the request's stream carries the WebSocket frames both ways. The
// session is the same as over a hijacked HTTP/1.1 connection: gorilla reads
// the browser's frames (masking, control frames, fragmentation, the size
// limit, the close handshake), over a console.Stream instead of a socket,
// and the session writes its own frames to it.

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
func (h *Handler) upgradeStream(w http.ResponseWriter, r *http.Request) (*websocket.Conn, *console.Stream, error) {
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
	sc *console.Stream
}

func (h streamHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	rw := bufio.NewReadWriter(bufio.NewReaderSize(h.sc, 16), bufio.NewWriterSize(io.Discard, 16))
	return h.sc.BrowserConn(), rw, nil
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
func newStreamConn(w http.ResponseWriter, r *http.Request) *console.Stream {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil {
		local = console.Addr(r.Host)
	}
	body := r.Body
	if reader, _ := caddyhttp.IdleTimeoutsFromContext(r.Context()); reader != nil {
		reader.Override(noIdleTimeout, 0)
		if body == io.ReadCloser(reader) {
			body = reader.ReadCloser
		}
	}
	inner := innermostWriter(w)
	return console.NewStream(body, inner, http.NewResponseController(inner), http.NewResponseController(w), local, console.Addr(r.RemoteAddr))
}

// Consoles and the process's exit: Caddy's servers wait for their
// requests to finish before the exit hooks run, and a console on an
// HTTP/2 or HTTP/3 stream is a request, so the exit would wait for it.
// Caddy emits a "stopping" event before it stops a config's apps; on the
// exit's (caddy.Exiting), every console ends with 1001 there and then.
// A reload's "stopping" keeps them.
func endConsolesAtExit(ctx caddy.Context) error {
	app, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("loading the events app: %w", err)
	}
	events, ok := app.(*caddyevents.App)
	if !ok {
		return fmt.Errorf("the events app is a %T", app)
	}
	return events.On("stopping", exitWatcher{})
}

// exitWatcher ends every console when the process's exit stops its config.
type exitWatcher struct{}

func (exitWatcher) Handle(context.Context, caddy.Event) error {
	if caddy.Exiting() {
		endAllConsoles()
	}
	return nil
}

// Interface guards
var (
	_ http.Hijacker = streamHijacker{}
)
