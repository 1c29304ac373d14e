package rfbproxy

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// Pseudo-encodings that offer input features. A view-only browser that
// does not offer them is not told the server could take them: noVNC then
// hides its power, resize and clipboard controls.
func inputEncoding(e int32) bool {
	switch e {
	case rfb.EncodingQEMUPointerMotionChange, rfb.EncodingQEMUExtendedKeyEvent, rfb.EncodingGii,
		rfb.EncodingExtendedDesktopSize, rfb.EncodingXvp, rfb.EncodingExtendedMouseButtons, rfb.EncodingExtendedClipboard:
		return true
	}
	return false
}

// Limits on what a view-only browser may send.
const (
	// maxEncodings bounds SetEncodings, which is held whole to be rewritten;
	// noVNC offers about thirty.
	maxEncodings = 1024
	// maxFencePayload is ClientFence's own limit.
	maxFencePayload = 64
	// DefaultMaxLength bounds the length a dropped message announces
	// (clipboard text) when ViewOnlyFilter.MaxLength is zero.
	DefaultMaxLength = 1 << 20
)

// ErrRefusedMessage: a view-only browser sent a message of a type the
// filter does not know, or a length past its limits. The session ends.
var ErrRefusedMessage = errors.New("message refused in view-only mode")

// ViewOnlyFilter frames the browser's messages to the VNC server (those
// after ClientInit) and lets through only those that ask for pictures:
// SetPixelFormat, SetEncodings less the pseudo-encodings of input features,
// FramebufferUpdateRequest, EnableContinuousUpdates, ClientFence and QEMU
// audio. Input (KeyEvent, PointerEvent, ClientCutText, xvp, SetDesktopSize,
// gii, QEMU extended key events) is dropped. Anything else is an error.
//
// Messages may arrive split or joined in any way; the filter holds at most
// one message being assembled (a SetEncodings of up to 1024 encodings) and
// skips dropped messages without holding them. The zero value is ready.
type ViewOnlyFilter struct {
	// MaxLength is the largest length a dropped clipboard message may
	// announce. Default: DefaultMaxLength.
	MaxLength int64
	// Dropped counts the input messages dropped.
	Dropped int64

	msg  []byte // the message being assembled
	need int    // how long msg must be before it can be judged
	skip int64  // bytes of a dropped message still to come
	// extendedMouse: the browser offered ExtendedMouseButtons, so a
	// PointerEvent with bit 7 of its mask set is 7 bytes long.
	extendedMouse bool
}

// Filter appends to dst what of p may reach the VNC server and returns it.
// After an error the filter must not be used again.
func (f *ViewOnlyFilter) Filter(dst, p []byte) ([]byte, error) {
	for len(p) > 0 {
		if f.skip > 0 {
			k := int(min(f.skip, int64(len(p))))
			p = p[k:]
			f.skip -= int64(k)
			continue
		}
		if f.need == 0 {
			f.need = 1
		}
		k := min(f.need-len(f.msg), len(p))
		f.msg = append(f.msg, p[:k]...)
		p = p[k:]
		if len(f.msg) < f.need {
			break
		}
		var err error
		if dst, err = f.judge(dst); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// judge looks at the message assembled so far: it asks for more bytes
// (f.need), or forwards or drops the complete message and starts the next.
func (f *ViewOnlyFilter) judge(dst []byte) ([]byte, error) {
	m := f.msg
	switch m[0] {
	case rfb.MsgSetPixelFormat:
		return f.forwardAt(dst, 20), nil
	case rfb.MsgFramebufferUpdateRequest, rfb.MsgEnableContinuousUpdates:
		return f.forwardAt(dst, 10), nil
	case rfb.MsgSetEncodings:
		if len(m) < 4 {
			f.need = 4
			return dst, nil
		}
		n := int(binary.BigEndian.Uint16(m[2:]))
		if n > maxEncodings {
			return dst, fmt.Errorf("%w: SetEncodings with %d encodings (limit %d)", ErrRefusedMessage, n, maxEncodings)
		}
		if len(m) < 4+4*n {
			f.need = 4 + 4*n
			return dst, nil
		}
		return f.forwardEncodings(dst, n), nil
	case rfb.MsgClientFence:
		if len(m) < 9 {
			f.need = 9
			return dst, nil
		}
		n := int(m[8])
		if n > maxFencePayload {
			return dst, fmt.Errorf("%w: ClientFence with %d bytes of payload (limit %d)", ErrRefusedMessage, n, maxFencePayload)
		}
		return f.forwardAt(dst, 9+n), nil

	case rfb.MsgKeyEvent:
		return f.dropAt(dst, 8, 0), nil
	case rfb.MsgPointerEvent:
		if len(m) < 2 {
			f.need = 2
			return dst, nil
		}
		if f.extendedMouse && m[1]&0x80 != 0 {
			return f.dropAt(dst, 7, 0), nil
		}
		return f.dropAt(dst, 6, 0), nil
	case rfb.MsgClientCutText:
		if len(m) < 8 {
			f.need = 8
			return dst, nil
		}
		// Extended Clipboard sends a negative length.
		n := int64(int32(binary.BigEndian.Uint32(m[4:])))
		if n < 0 {
			n = -n
		}
		if limit := f.maxLength(); n > limit {
			return dst, fmt.Errorf("%w: ClientCutText of %d bytes (limit %d)", ErrRefusedMessage, n, limit)
		}
		return f.dropAt(dst, 8, n), nil
	case rfb.MsgXvpClient:
		return f.dropAt(dst, 4, 0), nil
	case rfb.MsgSetDesktopSize:
		if len(m) < 8 {
			f.need = 8
			return dst, nil
		}
		return f.dropAt(dst, 8, 16*int64(m[6])), nil
	case rfb.MsgGii:
		if len(m) < 4 {
			f.need = 4
			return dst, nil
		}
		// Bit 7 of the second byte says the length is big-endian.
		var n uint16
		if m[1]&0x80 != 0 {
			n = binary.BigEndian.Uint16(m[2:])
		} else {
			n = binary.LittleEndian.Uint16(m[2:])
		}
		return f.dropAt(dst, 4, int64(n)), nil
	case rfb.MsgQEMUClient:
		if len(m) < 2 {
			f.need = 2
			return dst, nil
		}
		switch m[1] {
		case rfb.QEMUExtendedKeyEvent:
			return f.dropAt(dst, 12, 0), nil
		case rfb.QEMUAudio:
			if len(m) < 4 {
				f.need = 4
				return dst, nil
			}
			switch binary.BigEndian.Uint16(m[2:]) {
			case 0, 1: // enable, disable
				return f.forwardAt(dst, 4), nil
			case 2: // set format
				return f.forwardAt(dst, 10), nil
			}
			return dst, fmt.Errorf("%w: QEMU audio operation %d", ErrRefusedMessage, binary.BigEndian.Uint16(m[2:]))
		}
		return dst, fmt.Errorf("%w: QEMU message %d", ErrRefusedMessage, m[1])
	}
	return dst, fmt.Errorf("%w: message type %d", ErrRefusedMessage, m[0])
}

// forwardAt forwards the message once it is size bytes long.
func (f *ViewOnlyFilter) forwardAt(dst []byte, size int) []byte {
	if len(f.msg) < size {
		f.need = size
		return dst
	}
	dst = append(dst, f.msg...)
	f.next()
	return dst
}

// dropAt drops the message once its first size bytes are in; body bytes
// more follow and are skipped.
func (f *ViewOnlyFilter) dropAt(dst []byte, size int, body int64) []byte {
	if len(f.msg) < size {
		f.need = size
		return dst
	}
	f.Dropped++
	f.skip = body
	f.next()
	return dst
}

// forwardEncodings forwards SetEncodings without the input pseudo-encodings.
func (f *ViewOnlyFilter) forwardEncodings(dst []byte, n int) []byte {
	start := len(dst)
	dst = append(dst, f.msg[:4]...)
	kept := 0
	for i := range n {
		e := f.msg[4+4*i : 8+4*i]
		enc := int32(binary.BigEndian.Uint32(e))
		if enc == rfb.EncodingExtendedMouseButtons {
			f.extendedMouse = true
		}
		if inputEncoding(enc) {
			continue
		}
		dst = append(dst, e...)
		kept++
	}
	binary.BigEndian.PutUint16(dst[start+2:], uint16(kept))
	f.next()
	return dst
}

func (f *ViewOnlyFilter) next() {
	f.msg = f.msg[:0]
	f.need = 1
	if cap(f.msg) > 64<<10 {
		f.msg = nil // let a large SetEncodings go
	}
}

func (f *ViewOnlyFilter) maxLength() int64 {
	if f.MaxLength > 0 {
		return f.MaxLength
	}
	return DefaultMaxLength
}
