package vncdemo

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// maxCutText is the longest ClientCutText accepted (and discarded); a
// longer one ends the connection.
const maxCutText = 1 << 20

var errBadMessage = errors.New("bad client message")

// clientMessage is one parsed client-to-server message. Only the fields of
// its type are set; SetEncodings and ClientCutText carry nothing the server
// uses, so their payload is read and dropped.
type clientMessage struct {
	typ uint8

	pixelFormat rfb.PixelFormat // SetPixelFormat

	incremental bool // FramebufferUpdateRequest
	x, y, w, h  int

	down   bool // KeyEvent
	keysym uint32

	buttons uint8 // PointerEvent (with x, y)
}

// readClientMessage reads one message. It never holds more than a small,
// fixed amount of memory, whatever lengths the client announces.
func readClientMessage(r *bufio.Reader) (clientMessage, error) {
	var m clientMessage
	var b [20]byte
	if _, err := io.ReadFull(r, b[:1]); err != nil {
		return m, err
	}
	m.typ = b[0]
	switch m.typ {
	case rfb.MsgSetPixelFormat:
		if _, err := io.ReadFull(r, b[:19]); err != nil {
			return m, err
		}
		m.pixelFormat = rfb.UnmarshalPixelFormat(b[3:19])
	case rfb.MsgSetEncodings:
		if _, err := io.ReadFull(r, b[:3]); err != nil {
			return m, err
		}
		n := int64(binary.BigEndian.Uint16(b[1:]))
		if _, err := r.Discard(int(4 * n)); err != nil {
			return m, err
		}
	case rfb.MsgFramebufferUpdateRequest:
		if _, err := io.ReadFull(r, b[:9]); err != nil {
			return m, err
		}
		m.incremental = b[0] != 0
		m.x = int(binary.BigEndian.Uint16(b[1:]))
		m.y = int(binary.BigEndian.Uint16(b[3:]))
		m.w = int(binary.BigEndian.Uint16(b[5:]))
		m.h = int(binary.BigEndian.Uint16(b[7:]))
	case rfb.MsgKeyEvent:
		if _, err := io.ReadFull(r, b[:7]); err != nil {
			return m, err
		}
		m.down = b[0] != 0
		m.keysym = binary.BigEndian.Uint32(b[3:])
	case rfb.MsgPointerEvent:
		if _, err := io.ReadFull(r, b[:5]); err != nil {
			return m, err
		}
		m.buttons = b[0]
		m.x = int(binary.BigEndian.Uint16(b[1:]))
		m.y = int(binary.BigEndian.Uint16(b[3:]))
	case rfb.MsgClientCutText:
		if _, err := io.ReadFull(r, b[:7]); err != nil {
			return m, err
		}
		n := binary.BigEndian.Uint32(b[3:])
		if n > maxCutText {
			return m, fmt.Errorf("%w: ClientCutText of %d bytes", errBadMessage, n)
		}
		if _, err := r.Discard(int(n)); err != nil {
			return m, err
		}
	default:
		return m, fmt.Errorf("%w: unknown message type %d", errBadMessage, m.typ)
	}
	return m, nil
}
