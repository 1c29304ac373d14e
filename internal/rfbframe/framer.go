// Package rfbframe finds the message boundaries in the stream a VNC server
// sends after ServerInit, so that a proxy can drop whole messages (the
// clipboard, when copying is not allowed) while forwarding the rest as it
// arrives, and a session recorder can timestamp where each message starts.
//
// Framer.Next takes the stream in whatever pieces it arrives and answers
// with spans: so many bytes, all of one message, of this kind, starting or
// ending it. The framer never decodes pixels: it counts. It follows the
// encodings noVNC and TigerVNC's viewer offer (Raw, CopyRect, RRE, CoRRE,
// Hextile, zlib, Tight with all its methods and filters, TightPNG, ZRLE,
// H.264) and the pseudo-encodings they ask for, in the pixel format the
// client chose, and every server message they know. Its memory is a few
// dozen bytes whatever the server announces: a 4 GiB length is skipped by
// counting, never held.
//
// What it cannot frame is an error, never a guess: JPEG (encoding 21)
// has no length at all, and unknown encodings and messages have none the
// framer knows. RewriteSetEncodings takes them out of the client's offer,
// so that a well-behaved server never sends them.
package rfbframe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// Kind is the type of a server-to-client message.
type Kind uint8

const (
	FramebufferUpdate Kind = iota + 1
	SetColourMapEntries
	Bell
	// ServerCutText is clipboard text in the original format (Latin-1).
	ServerCutText
	// ExtendedClipboard is a ServerCutText with a negative length: see
	// Span.Clipboard for its action (caps, request, peek, notify, provide).
	ExtendedClipboard
	EndOfContinuousUpdates
	ServerFence
	Xvp
	// QEMUAudio is a QEMU server message of the audio subtype.
	QEMUAudio
)

var kindNames = [...]string{
	FramebufferUpdate:      "FramebufferUpdate",
	SetColourMapEntries:    "SetColourMapEntries",
	Bell:                   "Bell",
	ServerCutText:          "ServerCutText",
	ExtendedClipboard:      "ExtendedClipboard",
	EndOfContinuousUpdates: "EndOfContinuousUpdates",
	ServerFence:            "ServerFence",
	Xvp:                    "Xvp",
	QEMUAudio:              "QEMUAudio",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Span is a run of bytes at the start of what was given to Next, all of
// one message.
type Span struct {
	// Len is how many bytes the span covers.
	Len int
	// Kind is the type of the message the bytes belong to.
	Kind Kind
	// Start: the span begins the message. A recorder timestamps here.
	Start bool
	// End: the span ends the message.
	End bool
	// Size is the whole message's length in bytes when its header tells
	// it (every message but FramebufferUpdate), and -1 otherwise. For
	// ServerCutText, the text is Size-8 bytes long.
	Size int64
	// Clipboard holds the flags word of an ExtendedClipboard message
	// (rfb.ClipboardProvide and the others).
	Clipboard uint32
}

// MaxHeader is the most bytes Next may need at once: it returns the first
// span of a message only when the message's header is whole in what it is
// given (12 bytes for Extended Clipboard, fewer for the others). A caller
// that keeps what Next left and reads more after it needs a buffer of at
// least this size.
const MaxHeader = 12

// Errors of Next, with details wrapped around them.
var (
	// ErrCannotFrame: a message type or an encoding whose length the
	// framer cannot know (JPEG, unknown numbers).
	ErrCannotFrame = errors.New("cannot be framed")
	// ErrMalformed: a message that breaks the protocol's own rules.
	ErrMalformed = errors.New("malformed")
)

// Framer frames one server-to-client stream, after ServerInit. Next and
// AtBoundary are for one goroutine; SetPixelFormat may be called from
// another (the one relaying the client's messages).
type Framer struct {
	off int64 // bytes framed so far
	err error // once set, the stream cannot be framed further

	msg  Kind  // the message being framed; 0 between messages
	size int64 // its Size
	clip uint32
	skip int64 // bytes of the message still to come whose content does not matter

	update update // the FramebufferUpdate being framed

	format format

	mu         sync.Mutex
	pending    format
	hasPending atomic.Bool

	// onRect, when set (by tests), sees every rectangle framed.
	onRect func(rectInfo)
}

// NewFramer returns a framer for a stream whose pixel format is pf, the
// one of ServerInit.
func NewFramer(pf rfb.PixelFormat) (*Framer, error) {
	fm, err := formatOf(pf)
	if err != nil {
		return nil, err
	}
	return &Framer{format: fm}, nil
}

// SetPixelFormat tells the framer the pixel format a client asked for in
// a SetPixelFormat message. Call it before forwarding that message to the
// server: it applies from the next message the framer starts, which is
// where the server switches too as long as the client has no update
// pending when it changes format, as noVNC and TigerVNC's viewer do (RFB
// gives no other marker). A format the framer cannot follow is an error;
// the stream's format is then unchanged.
func (f *Framer) SetPixelFormat(pf rfb.PixelFormat) error {
	fm, err := formatOf(pf)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.pending = fm
	f.hasPending.Store(true)
	f.mu.Unlock()
	return nil
}

// AtBoundary reports whether the bytes framed so far end with a whole
// message: where a stream may end or a recording may be cut.
func (f *Framer) AtBoundary() bool { return f.msg == 0 }

// Offset is the number of bytes framed so far.
func (f *Framer) Offset() int64 { return f.off }

// Next frames the beginning of p, the next bytes of the stream, and returns
// the span of them that belongs to one message. It consumes as much of that
// message as p holds, so large updates pass in few spans.
//
// A span of length 0 with a nil error means p (shorter than MaxHeader)
// holds only the beginning of a message header: give those bytes again,
// with more after them. After an error, the stream cannot be framed and
// Next keeps returning that error.
func (f *Framer) Next(p []byte) (Span, error) {
	if f.err != nil {
		return Span{}, f.err
	}
	if len(p) == 0 {
		return Span{}, nil
	}
	s := Span{}
	n := 0
	if f.msg == 0 {
		if f.hasPending.Load() {
			f.mu.Lock()
			f.format = f.pending
			f.hasPending.Store(false)
			f.mu.Unlock()
		}
		h, err := f.begin(p)
		if err != nil {
			f.err = fmt.Errorf("%w (message at byte %d of the stream)", err, f.off)
			return Span{}, f.err
		}
		if h == 0 {
			return Span{}, nil
		}
		s.Start = true
		n = h
	}
	s.Kind, s.Size, s.Clipboard = f.msg, f.size, f.clip

	if f.msg == FramebufferUpdate {
		k, done, err := f.update.frame(f, p[n:], f.off+int64(n))
		n += k
		if err != nil {
			f.err = fmt.Errorf("%w (in the FramebufferUpdate at byte %d of the stream)", err, f.update.start)
			return Span{}, f.err
		}
		if done {
			f.msg = 0
		}
	} else {
		k := int(min(f.skip, int64(len(p)-n)))
		n += k
		f.skip -= int64(k)
		if f.skip == 0 {
			f.msg = 0
		}
	}
	s.Len = n
	s.End = f.msg == 0
	f.off += int64(n)
	return s, nil
}

// begin reads the header of the message at the start of p and sets the
// framer up for its body. It returns the header's length, or 0 if p does
// not hold it all yet.
func (f *Framer) begin(p []byte) (int, error) {
	f.clip = 0
	switch p[0] {
	case rfb.MsgFramebufferUpdate:
		if len(p) < 4 {
			return 0, nil
		}
		f.msg, f.size = FramebufferUpdate, -1
		f.update.begin(f.off, binary.BigEndian.Uint16(p[2:]))
		return 4, nil
	case rfb.MsgSetColourMapEntries:
		if len(p) < 6 {
			return 0, nil
		}
		return f.fixed(SetColourMapEntries, 6, 6*int64(binary.BigEndian.Uint16(p[4:]))), nil
	case rfb.MsgBell:
		return f.fixed(Bell, 1, 0), nil
	case rfb.MsgEndOfContinuousUpdates:
		return f.fixed(EndOfContinuousUpdates, 1, 0), nil
	case rfb.MsgXvpServer:
		if len(p) < 4 {
			return 0, nil
		}
		return f.fixed(Xvp, 4, 0), nil
	case rfb.MsgServerCutText:
		if len(p) < 8 {
			return 0, nil
		}
		// Extended Clipboard makes the length signed, and noVNC reads it
		// so whatever it offered.
		n := int64(int32(binary.BigEndian.Uint32(p[4:])))
		if n >= 0 {
			return f.fixed(ServerCutText, 8, n), nil
		}
		n = -n
		if n < 4 {
			return 0, fmt.Errorf("rfbframe: Extended Clipboard message of %d bytes, shorter than its flags: %w", n, ErrMalformed)
		}
		if len(p) < 12 {
			return 0, nil
		}
		h := f.fixed(ExtendedClipboard, 12, n-4)
		f.clip = binary.BigEndian.Uint32(p[8:])
		return h, nil
	case rfb.MsgServerFence:
		if len(p) < 9 {
			return 0, nil
		}
		// noVNC reads at most 64 bytes of payload and would lose its
		// place after a longer one.
		if n := p[8]; n > 64 {
			return 0, fmt.Errorf("rfbframe: ServerFence with %d bytes of payload (limit 64): %w", n, ErrMalformed)
		}
		return f.fixed(ServerFence, 9, int64(p[8])), nil
	case rfb.MsgQEMUServer:
		if len(p) < 2 {
			return 0, nil
		}
		if p[1] != rfb.QEMUServerAudio {
			return 0, fmt.Errorf("rfbframe: QEMU server message subtype %d %w", p[1], ErrCannotFrame)
		}
		if len(p) < 4 {
			return 0, nil
		}
		switch op := binary.BigEndian.Uint16(p[2:]); op {
		case rfb.QEMUAudioBegin, rfb.QEMUAudioEnd:
			return f.fixed(QEMUAudio, 4, 0), nil
		case rfb.QEMUAudioData:
			if len(p) < 8 {
				return 0, nil
			}
			return f.fixed(QEMUAudio, 8, int64(binary.BigEndian.Uint32(p[4:]))), nil
		default:
			return 0, fmt.Errorf("rfbframe: QEMU audio operation %d %w", op, ErrCannotFrame)
		}
	}
	return 0, fmt.Errorf("rfbframe: server message type %d %w", p[0], ErrCannotFrame)
}

// fixed starts a message of a header of h bytes and a body of n.
func (f *Framer) fixed(k Kind, h int, n int64) int {
	f.msg, f.size, f.skip = k, int64(h)+n, n
	return h
}

// format is what framing needs of a pixel format.
type format struct {
	bpp int // bytes per pixel
	// tpixel is the size of Tight's TPIXEL (its CPIXEL), or 0 when
	// servers disagree on it for this format.
	tpixel int
}

func formatOf(pf rfb.PixelFormat) (format, error) {
	switch pf.BitsPerPixel {
	case 8, 16, 32:
	default:
		return format{}, fmt.Errorf("rfbframe: pixel format of %d bits per pixel %w", pf.BitsPerPixel, ErrCannotFrame)
	}
	fm := format{bpp: int(pf.BitsPerPixel) / 8}
	fm.tpixel = fm.bpp
	if pf.BitsPerPixel == 32 && pf.RedMax == 255 && pf.GreenMax == 255 && pf.BlueMax == 255 {
		// rfbproto and TigerVNC send 3 bytes for true colour of depth 24
		// (TigerVNC only with byte-aligned shifts); QEMU sends 3 bytes
		// for any 32-bit format with these maxima. Where they differ the
		// size is unknowable.
		switch {
		case pf.TrueColour && pf.Depth == 24 && pf.RedShift%8 == 0 && pf.GreenShift%8 == 0 && pf.BlueShift%8 == 0:
			fm.tpixel = 3
		default:
			fm.tpixel = 0
		}
	}
	return fm, nil
}
