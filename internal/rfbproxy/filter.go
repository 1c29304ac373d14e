package rfbproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbframe"
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

// ErrRefusedMessage: a client sent a message of a type the filter does
// not know, or a length past its limits. The session ends.
var ErrRefusedMessage = errors.New("message refused")

// ClientFilter frames the client's messages to the VNC server (those
// after ClientInit) and enforces what the console allows:
//
//   - ViewOnly lets through only the messages that ask for pictures:
//     SetPixelFormat, SetEncodings less the pseudo-encodings of input
//     features, FramebufferUpdateRequest, EnableContinuousUpdates,
//     ClientFence and QEMU audio. Input (KeyEvent, PointerEvent,
//     ClientCutText, xvp, SetDesktopSize, gii, QEMU extended key events)
//     is dropped.
//   - Clipboard drops the client's clipboard (ClientCutText, Extended
//     Clipboard provide and notify) when pasting is off or the text is
//     larger than its MaxSize, whole, never truncated, and the client's
//     Extended Clipboard requests when copying is off.
//   - Server, the filter of the server's stream, is told of every
//     SetPixelFormat, and SetEncodings loses what it cannot frame
//     (rfbframe.RewriteSetEncodings).
//
// A message of a type it does not know is an error.
//
// Messages may arrive split or joined in any way; the filter holds at most
// one message being assembled (a SetEncodings of up to 1024 encodings, a
// gii event of up to 64 KiB, or an Extended Clipboard provide of about
// Clipboard's MaxSize, which is held to learn its inflated size) and
// streams or skips everything else without holding it.
type ClientFilter struct {
	// ViewOnly drops input.
	ViewOnly bool
	// Clipboard is the console's clipboard policy.
	Clipboard Clipboard
	// Server, when set, frames the server's stream of the console.
	Server *ServerFilter
	// MaxLength is the largest length a clipboard message dropped from a
	// view-only client may announce. Default: DefaultMaxLength.
	MaxLength int64
	// Dropped counts the input messages dropped (view-only).
	Dropped int64
	// ClipboardDropped counts the clipboard messages dropped by the
	// clipboard policy.
	ClipboardDropped atomic.Int64

	msg  []byte // the message being assembled
	need int    // how long msg must be before it can be judged
	skip int64  // bytes of a dropped message still to come
	pass int64  // bytes of a forwarded message still to come
	// hold: bytes of a held Extended Clipboard provide still to come.
	hold int64
	// extendedMouse: the client offered ExtendedMouseButtons, so a
	// PointerEvent with bit 7 of its mask set is 7 bytes long.
	extendedMouse bool
}

// Filter appends to dst what of p may reach the VNC server and returns it.
// After an error the filter must not be used again.
func (f *ClientFilter) Filter(dst, p []byte) ([]byte, error) {
	for len(p) > 0 {
		switch {
		case f.skip > 0:
			k := int(min(f.skip, int64(len(p))))
			p = p[k:]
			f.skip -= int64(k)
			continue
		case f.pass > 0:
			k := int(min(f.pass, int64(len(p))))
			dst = append(dst, p[:k]...)
			p = p[k:]
			f.pass -= int64(k)
			continue
		case f.hold > 0:
			k := int(min(f.hold, int64(len(p))))
			f.msg = append(f.msg, p[:k]...)
			p = p[k:]
			if f.hold -= int64(k); f.hold == 0 {
				dst = f.released(dst)
			}
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
func (f *ClientFilter) judge(dst []byte) ([]byte, error) {
	m := f.msg
	switch m[0] {
	case rfb.MsgSetPixelFormat:
		if len(m) < 20 {
			f.need = 20
			return dst, nil
		}
		if f.Server != nil {
			if err := f.Server.SetPixelFormat(rfb.UnmarshalPixelFormat(m[4:20])); err != nil {
				return dst, fmt.Errorf("SetPixelFormat: %w", err)
			}
		}
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
		return f.forwardEncodings(dst, n)
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
		return f.inputAt(dst, 8, 0), nil
	case rfb.MsgPointerEvent:
		if len(m) < 2 {
			f.need = 2
			return dst, nil
		}
		if f.extendedMouse && m[1]&0x80 != 0 {
			return f.inputAt(dst, 7, 0), nil
		}
		return f.inputAt(dst, 6, 0), nil
	case rfb.MsgClientCutText:
		return f.cutText(dst)
	case rfb.MsgXvpClient:
		return f.inputAt(dst, 4, 0), nil
	case rfb.MsgSetDesktopSize:
		if len(m) < 8 {
			f.need = 8
			return dst, nil
		}
		return f.inputAt(dst, 8, 16*int64(m[6])), nil
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
		return f.inputAt(dst, 4, int64(n)), nil
	case rfb.MsgQEMUClient:
		if len(m) < 2 {
			f.need = 2
			return dst, nil
		}
		switch m[1] {
		case rfb.QEMUExtendedKeyEvent:
			return f.inputAt(dst, 12, 0), nil
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

// cutText judges a ClientCutText, plain or Extended Clipboard (a negative
// length), by the console's policy.
func (f *ClientFilter) cutText(dst []byte) ([]byte, error) {
	m := f.msg
	if len(m) < 8 {
		f.need = 8
		return dst, nil
	}
	n := int64(int32(binary.BigEndian.Uint32(m[4:])))
	if f.ViewOnly {
		if n < 0 {
			n = -n
		}
		if limit := f.maxLength(); n > limit {
			return dst, fmt.Errorf("%w: ClientCutText of %d bytes (limit %d)", ErrRefusedMessage, n, limit)
		}
		return f.dropAt(dst, 8, n), nil
	}
	if n >= 0 {
		switch f.Clipboard.judge(false, false, 0, n) {
		case pass:
			return f.passAt(dst, 8, n), nil
		default:
			f.ClipboardDropped.Add(1)
			return f.skipAt(dst, 8, n), nil
		}
	}
	n = -n
	if n < 4 {
		return dst, fmt.Errorf("%w: Extended Clipboard message of %d bytes, shorter than its flags", ErrRefusedMessage, n)
	}
	if len(m) < 12 {
		f.need = 12
		return dst, nil
	}
	switch f.Clipboard.judge(false, true, binary.BigEndian.Uint32(m[8:]), n-4) {
	case pass:
		return f.passAt(dst, 12, n-4), nil
	case hold:
		f.hold = n - 4
		if f.hold == 0 {
			return f.released(dst), nil
		}
		return dst, nil
	default:
		f.ClipboardDropped.Add(1)
		return f.skipAt(dst, 12, n-4), nil
	}
}

// released judges a held Extended Clipboard provide, now whole in f.msg,
// by its inflated size.
func (f *ClientFilter) released(dst []byte) []byte {
	if extendedWithin(binary.BigEndian.Uint32(f.msg[8:]), f.msg[12:], f.Clipboard.Max()) {
		dst = append(dst, f.msg...)
	} else {
		f.ClipboardDropped.Add(1)
	}
	f.next()
	return dst
}

// inputAt drops input from a view-only client and forwards it from
// others, once its first size bytes are in; body bytes more follow.
func (f *ClientFilter) inputAt(dst []byte, size int, body int64) []byte {
	if f.ViewOnly {
		return f.dropAt(dst, size, body)
	}
	return f.passAt(dst, size, body)
}

// forwardAt forwards the message once it is size bytes long.
func (f *ClientFilter) forwardAt(dst []byte, size int) []byte {
	return f.passAt(dst, size, 0)
}

// passAt forwards the message once its first size bytes are in; body
// bytes more follow and are forwarded as they come.
func (f *ClientFilter) passAt(dst []byte, size int, body int64) []byte {
	if len(f.msg) < size {
		f.need = size
		return dst
	}
	dst = append(dst, f.msg...)
	f.pass = body
	f.next()
	return dst
}

// dropAt drops the input message once its first size bytes are in; body
// bytes more follow and are skipped.
func (f *ClientFilter) dropAt(dst []byte, size int, body int64) []byte {
	if len(f.msg) < size {
		f.need = size
		return dst
	}
	f.Dropped++
	return f.skipAt(dst, size, body)
}

// skipAt drops the message, whose first size bytes are in; body bytes
// more follow and are skipped.
func (f *ClientFilter) skipAt(dst []byte, size int, body int64) []byte {
	f.skip = int64(size-len(f.msg)) + body
	f.next()
	return dst
}

// forwardEncodings forwards SetEncodings without the input
// pseudo-encodings (view-only) and without what the server's framer
// cannot frame.
func (f *ClientFilter) forwardEncodings(dst []byte, n int) ([]byte, error) {
	m := f.msg[:4]
	for i := range n {
		e := f.msg[4+4*i : 8+4*i]
		enc := int32(binary.BigEndian.Uint32(e))
		if enc == rfb.EncodingExtendedMouseButtons {
			f.extendedMouse = true
		}
		if f.ViewOnly && inputEncoding(enc) {
			continue
		}
		m = append(m, e...) // in place: m never passes what it reads
	}
	binary.BigEndian.PutUint16(m[2:], uint16((len(m)-4)/4))
	if f.Server != nil {
		var err error
		if dst, _, err = rfbframe.RewriteSetEncodings(dst, m); err != nil {
			return dst, err
		}
	} else {
		dst = append(dst, m...)
	}
	f.next()
	return dst, nil
}

func (f *ClientFilter) next() {
	f.msg = f.msg[:0]
	f.need = 1
	if cap(f.msg) > 64<<10 {
		f.msg = nil // let a large SetEncodings or held clipboard go
	}
}

func (f *ClientFilter) maxLength() int64 {
	if f.MaxLength > 0 {
		return f.MaxLength
	}
	return DefaultMaxLength
}
