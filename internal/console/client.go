package console

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfbproxy"
)

// A clientSide is the session's client side as the engine sees it: how the
// VNC server's bytes are framed for it, how its bytes are taken for the
// VNC server, and how it is told that the console ends. It is all that
// differs between a browser's WebSocket (frames, pings, close frames) and
// a native viewer's byte stream (none of these: "close" is the end of the
// connection). The pumps, the write lock and its ordering, the stall
// checks, the idle timeout, EndAt, the view-only filter, the registry,
// metrics and logs are the session's, the same for both.
type clientSide interface {
	// start readies the connection for the relay, as Start begins.
	start(s *Session)
	// header puts the framing of an n-byte data message at the end of
	// room (frameHeaderRoom bytes) and returns where it begins: len(room)
	// when the bytes go unframed.
	header(room []byte, n int) int
	// acceptRFB is the client's side of an RFB-aware console's handshake,
	// the VNC server logged in to already: it returns ClientInit's shared
	// flag and what the client sent after it, for the VNC server.
	acceptRFB(s *Session) (shared bool, pending []byte, err error)
	// pumpToTarget relays the client's bytes to the VNC server through
	// s.writeToTarget until the client or the session ends.
	pumpToTarget(s *Session)
	// writeClose tells the client that the console ends, code and text
	// saying why where the transport can (a WebSocket close frame). The
	// caller holds s.bc.mu: it goes after the data in flight, and nothing
	// written follows it (it sets s.bc.closeSent).
	writeClose(s *Session, code int, text string, deadline time.Time) error
}

// wsClient is a browser's WebSocket, over a hijacked HTTP/1.1 connection
// or an HTTP/2 or HTTP/3 stream.
type wsClient struct {
	ws *websocket.Conn
}

func (c wsClient) start(s *Session) {
	c.ws.SetReadLimit(s.maxMessageSize)
	c.ws.SetPongHandler(func(string) error {
		s.heard.Store(time.Now().UnixNano())
		return nil
	})
	c.ws.SetPingHandler(func(data string) error {
		s.heard.Store(time.Now().UnixNano())
		if err := s.tryWriteControl(websocket.PongMessage, []byte(data), 2*s.tickInterval()); err != nil && !errors.Is(err, errWriteBusy) {
			s.endOnControlError(err, "writing a pong")
		}
		return nil
	})
	// The browser's close is echoed by end, after the frame in flight.
	c.ws.SetCloseHandler(func(int, string) error { return nil })
}

func (wsClient) header(room []byte, n int) int { return putFrameHeader(room, n) }

func (c wsClient) acceptRFB(s *Session) (bool, []byte, error) {
	bs := &browserStream{s: s, ws: c.ws}
	shared, _, err := rfbproxy.Accept(bs)
	return shared, bs.pending, err
}

// pumpToTarget relays the browser's binary messages (and text messages,
// with acceptText) to the VNC server. It takes a buffer only once a
// message has begun.
func (c wsClient) pumpToTarget(s *Session) {
	for {
		mt, r, err := c.ws.NextReader()
		if err != nil {
			s.endOnBrowserError(err)
			return
		}
		if mt != websocket.BinaryMessage && !s.acceptText {
			s.end(reasonTextMessage, websocket.CloseUnsupportedData, "only binary messages are accepted", nil)
			return
		}
		s.heard.Store(time.Now().UnixNano())
		bp := relayBuffers.Get().(*[]byte)
		err = s.copyMessage(r, *bp)
		relayBuffers.Put(bp)
		if err != nil {
			return
		}
	}
}

func (wsClient) writeClose(s *Session, code int, text string, deadline time.Time) error {
	return s.writeControlLocked(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), deadline)
}

// nativeClient is a native VNC viewer on the native listener, admitted
// (its SecurityResult sent): the session's bytes are RFB itself, with no
// framing, no keepalive a viewer would answer, and no close message.
type nativeClient struct {
	nc *rfbproxy.NativeClient
}

// nativeReadSize is how much of a native viewer's input is taken at a
// time. Its messages are small (keys, pointer, update requests), and the
// buffer is on the pump's stack, so an idle console holds no relay buffer.
const nativeReadSize = 2 << 10

func (nativeClient) start(*Session) {}

func (nativeClient) header(room []byte, _ int) int { return len(room) }

func (c nativeClient) acceptRFB(*Session) (bool, []byte, error) {
	shared, err := c.nc.ClientInit()
	if err != nil {
		// What the handshake's end makes of it: a viewer that left or
		// broke the exchange.
		return false, nil, fmt.Errorf("%w: %w", rfbproxy.ErrBrowser, err)
	}
	return shared, nil, nil
}

func (nativeClient) pumpToTarget(s *Session) {
	var buf [nativeReadSize]byte
	for {
		n, err := s.bc.Conn.Read(buf[:])
		if n > 0 {
			s.heard.Store(time.Now().UnixNano())
			if s.writeToTarget(buf[:n]) != nil {
				return
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			// The viewer closed: its connection is closed in turn, after
			// what is being written to it.
			s.end(reasonBrowserClosed, websocket.CloseNormalClosure, "", nil)
			return
		default:
			s.end(reasonBrowserGone, 0, "", err)
			return
		}
	}
}

// writeClose: RFB has no close message, so the viewer learns of the end
// when its connection closes, after the bytes written before it
// (lingerClose, once both pumps are done). The "close" writes nothing but
// is the last write all the same, and wakes the viewer's reader so that
// pumpToTarget returns: nothing the viewer sends from now on reaches the
// VNC server.
func (nativeClient) writeClose(s *Session, _ int, _ string, _ time.Time) error {
	return s.bc.writeLocked(nil, true, func() error {
		_ = s.bc.Conn.SetReadDeadline(time.Now())
		return nil
	})
}

// Interface guards
var (
	_ clientSide = wsClient{}
	_ clientSide = nativeClient{}
)
