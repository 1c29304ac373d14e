package console

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfbproxy"
)

// Why an RFB-aware session ended, as logged.
const (
	reasonBrowserHandshake = "browser rfb handshake failed"
	reasonRefusedMessage   = "message refused on a view-only console"
)

// acceptBrowser runs the proxy's side of the RFB handshake with the browser
// of an RFB-aware session, the VNC server having been logged in to already,
// and sends the VNC server the browser's ClientInit (shared when view-only)
// and anything the browser sent after it. It ends the session on failure.
// The browser has HandshakeTimeout to finish.
func (s *Session) acceptBrowser() error {
	timer := time.AfterFunc(s.handshakeTimeout, func() {
		s.end(reasonBrowserHandshake, websocket.CloseProtocolError, "RFB handshake timed out", errors.New("the browser did not finish the RFB handshake in time"))
	})
	shared, pending, err := s.side.acceptRFB(s)
	stopped := timer.Stop()
	if err != nil {
		if stopped {
			s.endOnHandshakeError(err)
		}
		return err
	}
	if s.filter != nil {
		// A viewer never disconnects the VNC server's other clients.
		shared = true
	}
	init := []byte{0}
	if shared {
		init[0] = 1
	}
	if _, err := s.target.Write(init); err != nil {
		s.end(reasonTargetWriteErr, websocket.CloseNormalClosure, "VNC server closed the connection", err)
		return err
	}
	s.countToTarget(1)
	if len(pending) > 0 {
		return s.writeToTarget(pending)
	}
	return nil
}

func (s *Session) endOnHandshakeError(err error) {
	if errors.Is(err, rfbproxy.ErrBrowser) {
		s.end(reasonBrowserHandshake, websocket.CloseProtocolError, "RFB handshake failed", err)
		return
	}
	s.endOnBrowserError(err)
}

// writeToTarget sends bytes from the browser to the VNC server, through the
// view-only filter when there is one. It ends the session on error.
func (s *Session) writeToTarget(p []byte) error {
	if s.filter != nil {
		out, err := s.filter.Filter(s.filtered[:0], p)
		s.filtered = out[:0]
		if err != nil {
			s.endOnFilterError(err)
			return err
		}
		p = out
		if len(p) == 0 {
			return nil
		}
	}
	if s.spice != nil {
		out, err := s.spiceFilter(p)
		if err != nil || len(out) == 0 {
			return err
		}
		p = out
	}
	if err := s.recordClient(p); err != nil {
		return err
	}
	return s.sendToTarget(p)
}

// sendToTarget writes p to the VNC (or SPICE, serial...) server as it is.
func (s *Session) sendToTarget(p []byte) error {
	s.toTargetBusy.Store(true)
	_, err := s.target.Write(p)
	s.toTargetBusy.Store(false)
	if err != nil {
		s.end(reasonTargetWriteErr, websocket.CloseNormalClosure, "VNC server closed the connection", err)
		return err
	}
	s.countToTarget(len(p))
	return nil
}

// browserStream is the browser's side of the RFB handshake as a byte
// stream: each Write is one binary message, and Read reads messages whole,
// so that what the browser sent past the handshake stays in pending for
// the VNC server.
type browserStream struct {
	s       *Session
	ws      *websocket.Conn
	pending []byte
}

func (b *browserStream) Write(p []byte) (int, error) {
	buf := make([]byte, frameHeaderRoom+len(p))
	copy(buf[frameHeaderRoom:], p)
	if err := b.s.writeData(buf, len(p)); err != nil {
		return 0, err
	}
	b.s.countToBrowser(len(p))
	return len(p), nil
}

func (b *browserStream) Read(p []byte) (int, error) {
	for len(b.pending) == 0 {
		mt, r, err := b.ws.NextReader()
		if err != nil {
			return 0, err
		}
		if mt != websocket.BinaryMessage {
			return 0, fmt.Errorf("%w: a text message", rfbproxy.ErrBrowser)
		}
		// The read limit (max_message_size) bounds the message.
		if b.pending, err = io.ReadAll(r); err != nil {
			return 0, err
		}
	}
	n := copy(p, b.pending)
	b.pending = b.pending[n:]
	return n, nil
}
