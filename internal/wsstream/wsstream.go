// Package wsstream uses a WebSocket the way noVNC does: the peer's binary
// messages read as one byte stream, each Write sent as one binary message.
// Tests and benchmarks speak RFB through the proxy with it.
package wsstream

import (
	"fmt"
	"io"

	"github.com/gorilla/websocket"
)

// Stream is a byte stream over a WebSocket's binary messages.
type Stream struct {
	Conn *websocket.Conn
	r    io.Reader
}

// New returns a Stream over c.
func New(c *websocket.Conn) *Stream { return &Stream{Conn: c} }

// Read reads the next bytes of the current binary message, moving on to
// the next message at its end. A text message is an error.
func (s *Stream) Read(p []byte) (int, error) {
	for {
		if s.r == nil {
			mt, r, err := s.Conn.NextReader()
			if err != nil {
				return 0, err
			}
			if mt != websocket.BinaryMessage {
				return 0, fmt.Errorf("wsstream: got message type %d, want binary", mt)
			}
			s.r = r
		}
		n, err := s.r.Read(p)
		if err == io.EOF {
			s.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// Write sends p as one binary message.
func (s *Stream) Write(p []byte) (int, error) {
	if err := s.Conn.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
