package caddymodule

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
)

// upgrade answers an HTTP/1.1 WebSocket upgrade with 101 and returns the
// WebSocket. The 101 goes out through Caddy's response writer, as
// reverse_proxy's does, so that the access log records it; the connection
// is then hijacked beneath Caddy's wrappers, and gorilla's own 101 is
// dropped (console.NewAnsweredBrowserConn). checkUpgradeRequest has checked the
// request as gorilla does, so gorilla accepts what was answered.
func (h *Handler) upgrade(w http.ResponseWriter, r *http.Request) (*websocket.Conn, error) {
	hdr := w.Header()
	hdr.Set("Upgrade", "websocket")
	hdr.Set("Connection", "Upgrade")
	hdr.Set("Sec-WebSocket-Accept", acceptKey(r.Header.Get("Sec-WebSocket-Key")))
	if slices.Contains(websocket.Subprotocols(r), "binary") {
		hdr.Set("Sec-WebSocket-Protocol", "binary")
	}
	w.WriteHeader(http.StatusSwitchingProtocols)
	return h.upgrader.Upgrade(hijackWriter{w}, r, nil)
}

// acceptKey is Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455,
// section 4.2.2).
func acceptKey(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// hijackWriter exposes Hijack to gorilla/websocket, which asserts
// http.Hijacker directly, while Caddy's response writer wrappers offer it
// only through Unwrap.
//
// It hijacks the innermost writer, past Caddy's access-log recorder: that
// recorder wraps a hijacked connection to count its bytes and reads the
// counts when the handler returns, but a session outlives the handler (so
// that an idle console holds no request goroutine and no request state). The
// session logs its own bytes and duration when it ends.
type hijackWriter struct {
	http.ResponseWriter
}

func (w hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(innermostWriter(w.ResponseWriter)).Hijack()
	if err != nil {
		return c, brw, err
	}
	// The 101 went out before the hijack, so the browser may have sent its
	// first message already, and the server may have read it: those bytes
	// go to the WebSocket, and gorilla, which refuses a connection whose
	// reader holds bytes before its handshake, gets an empty reader.
	var early []byte
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ = brw.Reader.Peek(n)
		early = bytes.Clone(early)
	}
	rw := bufio.NewReadWriter(bufio.NewReaderSize(strings.NewReader(""), 16), brw.Writer)
	return console.NewAnsweredBrowserConn(c, early), rw, nil
}

// innermostWriter is the server's own response writer, under Caddy's
// wrappers.
func innermostWriter(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// Interface guard
var _ http.Hijacker = hijackWriter{}
