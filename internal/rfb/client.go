package rfb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Limits on lengths a server announces after the handshake, so that a
// broken server cannot make a test allocate without bound.
const (
	maxNameLen = 64 << 10
	maxCutText = 16 << 20
)

// ServerInit is what the server announces after the handshake.
type ServerInit struct {
	Width, Height int
	PixelFormat   PixelFormat
	Name          string
	// Major and Minor are the protocol version the client and server agreed
	// on (3.3, 3.7 or 3.8).
	Major, Minor int
	// Security is the security type used (SecurityNone or SecurityVNCAuth).
	Security uint8
}

// ClientHandshake runs the client side of the handshake on rw: version
// (3.8, or what an older server offers), security None or VNC
// Authentication, ClientInit with the shared flag set, and ServerInit.
//
// With a password, VNC Authentication is preferred when offered; without
// one, None is, and VNC Authentication is tried with an empty password
// when None is not offered. A rejected password yields an error wrapping
// ErrAuthFailed.
func ClientHandshake(rw io.ReadWriter, password string) (ServerInit, error) {
	return ClientHandshakeVersion(rw, password, 8)
}

// ClientHandshakeVersion is ClientHandshake offering at most version
// 3.maxMinor (3, 7 or 8), to test servers with older clients.
func ClientHandshakeVersion(rw io.ReadWriter, password string, maxMinor int) (ServerInit, error) {
	return ClientHandshakeWith(rw, HandshakeOptions{Password: password, MaxMinor: maxMinor})
}

// HandshakeOptions are the choices of ClientHandshakeWith and ClientLogin.
type HandshakeOptions struct {
	Password string
	// MaxMinor is the highest version offered, 3.MaxMinor: 3, 7 or 8; 0
	// means 8.
	MaxMinor int
	// Exclusive sends ClientInit with the shared flag off, which asks the
	// server to disconnect its other clients.
	Exclusive bool
}

// ClientLogin is the test client's Login: it reads the server's greeting
// from rw and runs Login's handshake, bounds and errors included, up to
// and including the SecurityResult, with o's version and password and
// without TLS. With no password, VNC Authentication is tried with an empty
// one when None is not offered. The server then waits for ClientInit.
func ClientLogin(rw io.ReadWriter, o HandshakeOptions) (Result, error) {
	maxMinor := o.MaxMinor
	switch maxMinor {
	case 0:
		maxMinor = 8
	case 3, 7, 8:
	default:
		return Result{}, fmt.Errorf("rfb: cannot offer version 3.%d", maxMinor)
	}
	greeting := make([]byte, VersionLen)
	if _, err := io.ReadFull(rw, greeting); err != nil {
		return Result{}, fmt.Errorf("reading server version: %w", err)
	}
	l := login{rw: rw, cred: Credentials{Password: o.Password}, maxMinor: maxMinor, tryEmptyPassword: true}
	err := l.run(greeting)
	return l.res, err
}

// ClientHandshakeWith is ClientHandshake with options.
func ClientHandshakeWith(rw io.ReadWriter, o HandshakeOptions) (ServerInit, error) {
	res, err := ClientLogin(rw, o)
	si := ServerInit{Major: 3, Minor: res.Minor, Security: uint8(res.Security)}
	if err != nil {
		return si, err
	}

	shared := byte(1)
	if o.Exclusive {
		shared = 0
	}
	if _, err := rw.Write([]byte{shared}); err != nil { // ClientInit
		return si, fmt.Errorf("sending ClientInit: %w", err)
	}
	var b [24]byte
	if _, err := io.ReadFull(rw, b[:]); err != nil {
		return si, fmt.Errorf("reading ServerInit: %w", err)
	}
	si.Width = int(binary.BigEndian.Uint16(b[0:]))
	si.Height = int(binary.BigEndian.Uint16(b[2:]))
	si.PixelFormat = UnmarshalPixelFormat(b[4:20])
	nameLen := binary.BigEndian.Uint32(b[20:])
	if nameLen > maxNameLen {
		return si, fmt.Errorf("rfb: desktop name of %d bytes", nameLen)
	}
	name := make([]byte, nameLen)
	if _, err := io.ReadFull(rw, name); err != nil {
		return si, fmt.Errorf("reading desktop name: %w", err)
	}
	si.Name = string(name)
	return si, nil
}

// SetPixelFormat sends a SetPixelFormat message.
func SetPixelFormat(w io.Writer, pf PixelFormat) error {
	b := [20]byte{MsgSetPixelFormat}
	m := pf.Marshal()
	copy(b[4:], m[:])
	_, err := w.Write(b[:])
	return err
}

// SetPixelFormat32 asks for PixelFormat32, as noVNC does.
func SetPixelFormat32(w io.Writer) error { return SetPixelFormat(w, PixelFormat32) }

// SetEncodings sends a SetEncodings message. Offering only EncodingRaw (and
// optionally EncodingDesktopSize) keeps servers such as Xvnc to encodings
// ReadFramebufferUpdate understands.
func SetEncodings(w io.Writer, encodings ...int32) error {
	b := make([]byte, 4+4*len(encodings))
	b[0] = MsgSetEncodings
	binary.BigEndian.PutUint16(b[2:], uint16(len(encodings)))
	for i, e := range encodings {
		binary.BigEndian.PutUint32(b[4+4*i:], uint32(e))
	}
	_, err := w.Write(b)
	return err
}

// RequestUpdate sends a FramebufferUpdateRequest.
func RequestUpdate(w io.Writer, incremental bool, x, y, width, height uint16) error {
	b := [10]byte{MsgFramebufferUpdateRequest}
	if incremental {
		b[1] = 1
	}
	binary.BigEndian.PutUint16(b[2:], x)
	binary.BigEndian.PutUint16(b[4:], y)
	binary.BigEndian.PutUint16(b[6:], width)
	binary.BigEndian.PutUint16(b[8:], height)
	_, err := w.Write(b[:])
	return err
}

// KeyEvent sends a key press (down) or release of an X11 keysym.
func KeyEvent(w io.Writer, down bool, keysym uint32) error {
	b := [8]byte{MsgKeyEvent}
	if down {
		b[1] = 1
	}
	binary.BigEndian.PutUint32(b[4:], keysym)
	_, err := w.Write(b[:])
	return err
}

// PointerEvent sends the pointer position and button mask (bit 0 is the
// left button).
func PointerEvent(w io.Writer, buttonMask uint8, x, y uint16) error {
	b := [6]byte{MsgPointerEvent, buttonMask}
	binary.BigEndian.PutUint16(b[2:], x)
	binary.BigEndian.PutUint16(b[4:], y)
	_, err := w.Write(b[:])
	return err
}

// ClientCutText sends clipboard text.
func ClientCutText(w io.Writer, text []byte) error {
	b := make([]byte, 8+len(text))
	b[0] = MsgClientCutText
	binary.BigEndian.PutUint32(b[4:], uint32(len(text)))
	copy(b[8:], text)
	_, err := w.Write(b)
	return err
}

// Rect is one rectangle of a FramebufferUpdate.
type Rect struct {
	X, Y, Width, Height int
	Encoding            int32
	// RGB holds the pixels of a Raw rectangle, 3 bytes (red, green, blue)
	// per pixel, row by row. It is empty for a DesktopSize rectangle, whose
	// Width and Height are the new framebuffer size.
	RGB []byte
}

// At returns the colour of the framebuffer pixel (x, y), which must lie in
// a Raw rectangle r.
func (r Rect) At(x, y int) (red, green, blue uint8) {
	i := 3 * ((y-r.Y)*r.Width + (x - r.X))
	return r.RGB[i], r.RGB[i+1], r.RGB[i+2]
}

// Contains reports whether (x, y) lies in r.
func (r Rect) Contains(x, y int) bool {
	return x >= r.X && x < r.X+r.Width && y >= r.Y && y < r.Y+r.Height
}

// ErrUnsupported is returned by ReadFramebufferUpdate for a message type or
// encoding it does not understand.
var ErrUnsupported = errors.New("rfb: unsupported server message or encoding")

// ReadFramebufferUpdate reads server messages until a FramebufferUpdate and
// returns its rectangles, decoding Raw pixels of format pf. Bell,
// SetColourMapEntries and ServerCutText messages before it are skipped.
func ReadFramebufferUpdate(r io.Reader, pf PixelFormat) ([]Rect, error) {
	for {
		var t [1]byte
		if _, err := io.ReadFull(r, t[:]); err != nil {
			return nil, err
		}
		switch t[0] {
		case MsgFramebufferUpdate:
			return readRects(r, pf)
		case MsgSetColourMapEntries:
			var b [5]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return nil, err
			}
			n := int64(binary.BigEndian.Uint16(b[3:]))
			if _, err := io.CopyN(io.Discard, r, 6*n); err != nil {
				return nil, err
			}
		case MsgBell:
		case MsgServerCutText:
			var b [7]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return nil, err
			}
			n := binary.BigEndian.Uint32(b[3:])
			if n > maxCutText {
				return nil, fmt.Errorf("rfb: ServerCutText of %d bytes", n)
			}
			if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: message type %d", ErrUnsupported, t[0])
		}
	}
}

func readRects(r io.Reader, pf PixelFormat) ([]Rect, error) {
	var h [3]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(h[1:]))
	bpp := pf.BytesPerPixel()
	if bpp != 1 && bpp != 2 && bpp != 4 {
		return nil, fmt.Errorf("%w: %d bits per pixel", ErrUnsupported, pf.BitsPerPixel)
	}
	rects := make([]Rect, 0, n)
	var row []byte
	for range n {
		var b [12]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		rc := Rect{
			X:        int(binary.BigEndian.Uint16(b[0:])),
			Y:        int(binary.BigEndian.Uint16(b[2:])),
			Width:    int(binary.BigEndian.Uint16(b[4:])),
			Height:   int(binary.BigEndian.Uint16(b[6:])),
			Encoding: int32(binary.BigEndian.Uint32(b[8:])),
		}
		switch rc.Encoding {
		case EncodingRaw:
			rc.RGB = make([]byte, 3*rc.Width*rc.Height)
			row = slices.Grow(row[:0], bpp*rc.Width)[:bpp*rc.Width]
			o := 0
			for range rc.Height {
				if _, err := io.ReadFull(r, row); err != nil {
					return nil, err
				}
				for i := 0; i < len(row); i += bpp {
					rc.RGB[o], rc.RGB[o+1], rc.RGB[o+2] = pf.Pixel(row[i : i+bpp])
					o += 3
				}
			}
		case EncodingDesktopSize:
		default:
			return nil, fmt.Errorf("%w: encoding %d", ErrUnsupported, rc.Encoding)
		}
		rects = append(rects, rc)
	}
	return rects, nil
}

// Framebuffer is a client-side copy of the remote screen, 3 bytes per pixel,
// that FramebufferUpdate rectangles are applied to.
type Framebuffer struct {
	Width, Height int
	RGB           []byte
}

// NewFramebuffer returns a black framebuffer of the given size.
func NewFramebuffer(width, height int) *Framebuffer {
	return &Framebuffer{Width: width, Height: height, RGB: make([]byte, 3*width*height)}
}

// Apply copies the pixels of Raw rectangles into fb and resizes it for a
// DesktopSize rectangle. Parts outside the framebuffer are ignored.
func (fb *Framebuffer) Apply(rects []Rect) {
	for _, r := range rects {
		switch r.Encoding {
		case EncodingDesktopSize:
			*fb = *NewFramebuffer(r.Width, r.Height)
		case EncodingRaw:
			for y := max(r.Y, 0); y < min(r.Y+r.Height, fb.Height); y++ {
				for x := max(r.X, 0); x < min(r.X+r.Width, fb.Width); x++ {
					i := 3 * (y*fb.Width + x)
					fb.RGB[i], fb.RGB[i+1], fb.RGB[i+2] = r.At(x, y)
				}
			}
		}
	}
}

// At returns the colour of pixel (x, y).
func (fb *Framebuffer) At(x, y int) (r, g, b uint8) {
	i := 3 * (y*fb.Width + x)
	return fb.RGB[i], fb.RGB[i+1], fb.RGB[i+2]
}
