// Package rfb is the RFB (VNC) protocol, RFC 6143, as the project speaks
// it outside the relay: the protocol's numbers, the version greeting, the
// pixel format and VNC Authentication shared with the demo server, and the
// client side of the handshake, written once with one set of bounds.
//
// Login is that handshake for the proxy, which logs in to a VNC server on
// the client's behalf: RFB 3.3, 3.7 or 3.8, security None, VNC
// Authentication, VeNCrypt with X.509 certificates or Plain. ClientLogin
// runs the same handshake over any stream, and ClientHandshake adds
// ClientInit and ServerInit to it, for a minimal client (update requests,
// Raw updates, input events) that tests, the demo and the benchmarks use.
// That client offers no TLS and understands the Raw encoding and the
// DesktopSize pseudo-encoding only; it is a test tool, not a viewer.
//
// The proxy's server sides of the handshake (for browsers and native
// viewers) are in internal/rfbproxy.
package rfb

import (
	"crypto/des"
	"encoding/binary"
	"math/bits"
)

// PixelFormat is the 16-byte PIXEL_FORMAT structure.
type PixelFormat struct {
	BitsPerPixel uint8
	Depth        uint8
	BigEndian    bool
	TrueColour   bool
	RedMax       uint16
	GreenMax     uint16
	BlueMax      uint16
	RedShift     uint8
	GreenShift   uint8
	BlueShift    uint8
}

// PixelFormat32 is 32 bits per pixel, depth 24, little-endian true colour
// with red in bits 16-23, green 8-15 and blue 0-7: what noVNC asks for and
// what TigerVNC offers by default.
var PixelFormat32 = PixelFormat{
	BitsPerPixel: 32, Depth: 24, TrueColour: true,
	RedMax: 255, GreenMax: 255, BlueMax: 255,
	RedShift: 16, GreenShift: 8, BlueShift: 0,
}

// Marshal returns the wire form of pf.
func (pf PixelFormat) Marshal() [16]byte {
	var b [16]byte
	b[0] = pf.BitsPerPixel
	b[1] = pf.Depth
	if pf.BigEndian {
		b[2] = 1
	}
	if pf.TrueColour {
		b[3] = 1
	}
	binary.BigEndian.PutUint16(b[4:], pf.RedMax)
	binary.BigEndian.PutUint16(b[6:], pf.GreenMax)
	binary.BigEndian.PutUint16(b[8:], pf.BlueMax)
	b[10] = pf.RedShift
	b[11] = pf.GreenShift
	b[12] = pf.BlueShift
	return b
}

// UnmarshalPixelFormat decodes the wire form; b must hold at least 16 bytes.
func UnmarshalPixelFormat(b []byte) PixelFormat {
	_ = b[15]
	return PixelFormat{
		BitsPerPixel: b[0],
		Depth:        b[1],
		BigEndian:    b[2] != 0,
		TrueColour:   b[3] != 0,
		RedMax:       binary.BigEndian.Uint16(b[4:]),
		GreenMax:     binary.BigEndian.Uint16(b[6:]),
		BlueMax:      binary.BigEndian.Uint16(b[8:]),
		RedShift:     b[10],
		GreenShift:   b[11],
		BlueShift:    b[12],
	}
}

// BytesPerPixel is BitsPerPixel/8.
func (pf PixelFormat) BytesPerPixel() int { return int(pf.BitsPerPixel) / 8 }

// Pixel reads one pixel of this format from b and returns its 8-bit red,
// green and blue. b must hold BytesPerPixel bytes. Only true colour formats
// are meaningful.
func (pf PixelFormat) Pixel(b []byte) (r, g, bl uint8) {
	var v uint32
	switch pf.BitsPerPixel {
	case 8:
		v = uint32(b[0])
	case 16:
		if pf.BigEndian {
			v = uint32(binary.BigEndian.Uint16(b))
		} else {
			v = uint32(binary.LittleEndian.Uint16(b))
		}
	case 32:
		if pf.BigEndian {
			v = binary.BigEndian.Uint32(b)
		} else {
			v = binary.LittleEndian.Uint32(b)
		}
	}
	return scale8(v>>pf.RedShift, pf.RedMax), scale8(v>>pf.GreenShift, pf.GreenMax), scale8(v>>pf.BlueShift, pf.BlueMax)
}

func scale8(v uint32, max uint16) uint8 {
	if max == 0 {
		return 0
	}
	v &= uint32(max)
	return uint8((v*255 + uint32(max)/2) / uint32(max))
}

// VNCAuthResponse is the answer to a VNC Authentication challenge: the
// challenge encrypted with DES, keyed by the first 8 bytes of the password
// (zero-padded) with the bits of every byte reversed, as VNC has always done.
func VNCAuthResponse(password string, challenge [16]byte) [16]byte {
	var key [8]byte
	copy(key[:], password)
	for i, b := range key {
		key[i] = bits.Reverse8(b)
	}
	c, err := des.NewCipher(key[:])
	if err != nil {
		panic(err) // unreachable: the key is always 8 bytes
	}
	var out [16]byte
	c.Encrypt(out[:8], challenge[:8])
	c.Encrypt(out[8:], challenge[8:])
	return out
}
