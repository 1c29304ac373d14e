package recording

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// ErrClientStream: Client met a browser message it cannot frame; from
// there on the sidecar's pixel formats and the input file may miss some,
// so the recording is not complete (its stream still is).
var ErrClientStream = errors.New("browser stream cannot be framed")

// Client takes the browser's stream after ClientInit as it comes, split or
// joined in any way, for a relay that does not frame the browser's
// messages itself: it finds the messages Input records and passes them on.
// It holds at most one message header (20 bytes) and skips the rest of
// every other message without holding it. It must be called from one
// goroutine at a time. Errors are those of Input; a message it cannot
// frame stops the search (the server's stream is still recorded) and
// makes the recording incomplete with ErrClientStream.
func (r *Recording) Client(p []byte) error {
	if r.client.err != nil {
		return r.Err()
	}
	var first error
	err := r.client.feed(p, func(msg []byte) {
		if err := r.Input(msg); err != nil && first == nil {
			first = err
		}
	})
	if err != nil {
		r.mu.Lock()
		r.clientLost = err
		r.mu.Unlock()
	}
	if first != nil {
		return first
	}
	return r.Err()
}

// clientFramer finds message boundaries in a browser's stream.
type clientFramer struct {
	head [20]byte // the header being assembled, or the whole message kept
	n    int      // bytes of head filled
	skip int64    // bytes of the current message still to pass over
	// encodings still to read of a SetEncodings, and the bytes read so far
	// of the current one: ExtendedMouseButtons makes some PointerEvents
	// a byte longer.
	encodings     int
	enc           [4]byte
	encN          int
	extendedMouse bool
	err           error
}

// feed frames p and calls emit with each SetPixelFormat, KeyEvent,
// PointerEvent and QEMU extended key event; emit must not keep msg.
func (c *clientFramer) feed(p []byte, emit func(msg []byte)) error {
	for len(p) > 0 && c.err == nil {
		switch {
		case c.skip > 0:
			k := int(min(c.skip, int64(len(p))))
			c.skip -= int64(k)
			p = p[k:]
		case c.encodings > 0:
			k := copy(c.enc[c.encN:], p)
			c.encN += k
			p = p[k:]
			if c.encN == 4 {
				if int32(binary.BigEndian.Uint32(c.enc[:])) == rfb.EncodingExtendedMouseButtons {
					c.extendedMouse = true
				}
				c.encN = 0
				c.encodings--
			}
		default:
			want, err := c.want()
			if err != nil {
				c.err = err
				break
			}
			k := copy(c.head[c.n:want], p)
			c.n += k
			p = p[k:]
			// What came may show a longer header than thought.
			again, err := c.want()
			if err != nil {
				c.err = err
				break
			}
			if c.n < again {
				continue
			}
			c.finish(emit)
		}
	}
	return c.err
}

// want is how many bytes of header the message in head needs, from what
// head holds so far (at least its type).
func (c *clientFramer) want() (int, error) {
	if c.n == 0 {
		return 1, nil
	}
	h := c.head[:c.n]
	switch h[0] {
	case rfb.MsgSetPixelFormat:
		return 20, nil
	case rfb.MsgSetEncodings, rfb.MsgXvpClient, rfb.MsgGii:
		return 4, nil
	case rfb.MsgFramebufferUpdateRequest, rfb.MsgEnableContinuousUpdates:
		return 10, nil
	case rfb.MsgKeyEvent, rfb.MsgClientCutText, rfb.MsgSetDesktopSize:
		return 8, nil
	case rfb.MsgPointerEvent:
		if c.n >= 2 && c.extendedMouse && h[1]&0x80 != 0 {
			return 7, nil
		}
		return 6, nil
	case rfb.MsgClientFence:
		return 9, nil
	case rfb.MsgQEMUClient:
		if c.n < 2 {
			return 2, nil
		}
		switch h[1] {
		case rfb.QEMUExtendedKeyEvent:
			return 12, nil
		case rfb.QEMUAudio:
			if c.n >= 4 && binary.BigEndian.Uint16(h[2:]) == 2 { // set format
				return 10, nil
			}
			return 4, nil
		}
		return 0, fmt.Errorf("%w: QEMU message %d", ErrClientStream, h[1])
	}
	return 0, fmt.Errorf("%w: message type %d", ErrClientStream, h[0])
}

// finish ends a message whose header is whole: it is passed on if kept,
// and what follows the header is skipped or scanned.
func (c *clientFramer) finish(emit func([]byte)) {
	h := c.head[:c.n]
	switch h[0] {
	case rfb.MsgSetPixelFormat, rfb.MsgKeyEvent, rfb.MsgPointerEvent:
		emit(h)
	case rfb.MsgQEMUClient:
		if h[1] == rfb.QEMUExtendedKeyEvent {
			emit(h)
		}
	case rfb.MsgSetEncodings:
		c.encodings = int(binary.BigEndian.Uint16(h[2:]))
	case rfb.MsgClientCutText:
		// Extended Clipboard sends a negative length.
		n := int64(int32(binary.BigEndian.Uint32(h[4:])))
		c.skip = max(n, -n)
	case rfb.MsgClientFence:
		c.skip = int64(h[8])
	case rfb.MsgSetDesktopSize:
		c.skip = 16 * int64(h[6])
	case rfb.MsgGii:
		// Bit 7 of the second byte says the length is big-endian.
		if h[1]&0x80 != 0 {
			c.skip = int64(binary.BigEndian.Uint16(h[2:]))
		} else {
			c.skip = int64(binary.LittleEndian.Uint16(h[2:]))
		}
	}
	c.n = 0
}
