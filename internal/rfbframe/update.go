package rfbframe

import (
	"encoding/binary"
	"fmt"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// step is where the framing of a FramebufferUpdate stands: what the bytes
// gathered in update.acc (or the end of a skip) mean.
type step uint8

const (
	stepRectHeader          step = iota // x, y, width, height, encoding
	stepRectDone                        // the rectangle's data has passed
	stepLength32                        // zlib, ZRLE: a U32 length, then that many bytes
	stepH264                            // U32 length, U32 flags, then the data
	stepRRE                             // U32 count and a background pixel
	stepHextileTile                     // a tile's subencoding, then its colours and count
	stepHextileNext                     // a tile has passed
	stepTightControl                    // Tight's compression-control byte
	stepTightFilter                     // the filter-id byte
	stepTightPalette                    // the palette's number of colours minus one
	stepTightData                       // the filtered pixels: raw below 12 bytes, else compressed
	stepCompactLength                   // Tight's 1 to 3 byte length, then that many bytes
	stepCursorWithAlpha                 // the encoding of the cursor's pixels
	stepVMwareCursor                    // cursor type and padding
	stepDesktopName                     // U32 length, then the name
	stepExtendedDesktopSize             // number of screens and padding, then 16 bytes each
)

// update frames the body of a FramebufferUpdate: rectangles, each a
// 12-byte header and data whose length its encoding defines.
type update struct {
	start int64  // stream offset of the message, for errors
	rects uint16 // rectangles still to come, the current one included

	acc  [16]byte // the field being gathered
	have int      // bytes of it in acc
	need int      // bytes it takes
	skip int64    // bytes to pass before looking at acc again
	step step

	// The current rectangle.
	x, y, w, h int
	header     int32 // the encoding in its header
	encoding   int32 // the encoding of its data: header's, or the one inside CursorWithAlpha
	bpp        int   // bytes per pixel of its data: the stream's, or 4 inside CursorWithAlpha
	tpixel     int   // Tight's pixel size, 0 when unknowable

	// Hextile: the current tile's top-left corner in the rectangle.
	tileX, tileY int
	// Tight: the compression-control byte, and the size of the filtered
	// pixel data.
	control  byte
	dataSize int64

	// Stream offsets, for onRect: of the byte being looked at, of the
	// current rectangle, and of the last run skipped in it.
	at, rectAt, skipAt int64
}

// rectInfo is what tests learn of each rectangle framed.
type rectInfo struct {
	x, y, w, h int
	header     int32
	encoding   int32
	// start and end delimit the rectangle in the stream, header included;
	// payload is where its last counted run (compressed data, pixels)
	// starts.
	start, end, payload int64
	control             byte  // Tight's compression-control
	dataSize            int64 // Tight's filtered pixels, before compression
}

func (u *update) begin(off int64, rects uint16) {
	*u = update{start: off, rects: rects}
	u.expect(stepRectHeader, 12)
}

// expect makes n bytes the next field, read by step s.
func (u *update) expect(s step, n int) {
	u.step, u.need, u.have = s, n, 0
}

// pass skips n bytes, then goes to step s.
func (u *update) pass(s step, n int64) {
	u.step, u.need, u.have, u.skip = s, 0, 0, n
	u.skipAt = u.at
}

// frame consumes p, bytes of the update from stream offset off on, and
// reports how many it took and whether the update ended with them.
func (u *update) frame(f *Framer, p []byte, off int64) (int, bool, error) {
	if u.rects == 0 {
		return 0, true, nil
	}
	n := 0
	for {
		if u.skip > 0 {
			k := int(min(u.skip, int64(len(p)-n)))
			n += k
			u.skip -= int64(k)
			if u.skip > 0 {
				return n, false, nil
			}
		}
		var a []byte
		direct := false
		switch {
		case u.have == 0 && len(p)-n >= u.need:
			// The whole field is in p: read it there, without a copy.
			a = p[n : n+u.need]
			n += u.need
			u.have = u.need
			direct = true
		case u.have < u.need:
			k := copy(u.acc[u.have:u.need], p[n:])
			n += k
			u.have += k
			if u.have < u.need {
				return n, false, nil
			}
			a = u.acc[:u.have]
		default:
			a = u.acc[:u.have]
		}
		u.at = off + int64(n)
		done, err := u.advance(f, a)
		if err != nil || done {
			return n, done, err
		}
		if direct && u.have == len(a) && u.need > u.have {
			// The field goes on (a Hextile tile's colours, a longer
			// compact length): what was read of it goes where the rest
			// will be gathered.
			copy(u.acc[:], a)
		}
	}
}

// advance acts on a gathered field a (or a finished skip) and sets up what
// comes next. It reports whether the update is complete.
func (u *update) advance(f *Framer, a []byte) (bool, error) {
	switch u.step {
	case stepRectHeader:
		u.x = int(binary.BigEndian.Uint16(a[0:]))
		u.y = int(binary.BigEndian.Uint16(a[2:]))
		u.w = int(binary.BigEndian.Uint16(a[4:]))
		u.h = int(binary.BigEndian.Uint16(a[6:]))
		u.header = int32(binary.BigEndian.Uint32(a[8:]))
		u.encoding = u.header
		u.bpp, u.tpixel = f.format.bpp, f.format.tpixel
		u.rectAt, u.skipAt, u.control, u.dataSize = u.at-12, u.at, 0, 0
		if u.header == rfb.EncodingLastRect {
			u.observe(f)
			return true, nil
		}
		return false, u.rect(u.encoding)

	case stepRectDone:
		u.observe(f)
		u.rects--
		if u.rects == 0 {
			return true, nil
		}
		u.expect(stepRectHeader, 12)

	case stepLength32:
		u.pass(stepRectDone, int64(binary.BigEndian.Uint32(a)))
	case stepH264:
		u.pass(stepRectDone, int64(binary.BigEndian.Uint32(a)))
	case stepRRE:
		per := int64(u.bpp) + 8
		if u.encoding == rfb.EncodingCoRRE {
			per = int64(u.bpp) + 4
		}
		u.pass(stepRectDone, int64(binary.BigEndian.Uint32(a))*per)

	case stepHextileTile:
		return false, u.hextileTile(a)
	case stepHextileNext:
		u.tileX += 16
		if u.tileX >= u.w {
			u.tileX = 0
			u.tileY += 16
		}
		if u.tileY >= u.h {
			u.pass(stepRectDone, 0)
		} else {
			u.expect(stepHextileTile, 1)
		}

	case stepTightControl:
		return false, u.tightControl(a[0])
	case stepTightFilter:
		switch a[0] {
		case 0: // copy
			return false, u.tightPixels(stepTightData, int64(u.w)*int64(u.h))
		case 1: // palette
			u.expect(stepTightPalette, 1)
		case 2: // gradient
			if u.bpp == 1 {
				return false, fmt.Errorf("rfbframe: Tight gradient filter at 8 bits per pixel: %w", ErrMalformed)
			}
			return false, u.tightPixels(stepTightData, int64(u.w)*int64(u.h))
		default:
			return false, fmt.Errorf("rfbframe: Tight filter %d %w", a[0], ErrCannotFrame)
		}
	case stepTightPalette:
		colours := int64(a[0]) + 1
		// rfbproto says two colours take one bit a pixel; noVNC and
		// TigerVNC read a single colour so too.
		if colours <= 2 {
			u.dataSize = int64((u.w+7)/8) * int64(u.h)
		} else {
			u.dataSize = int64(u.w) * int64(u.h)
		}
		if u.tpixel == 0 {
			return false, u.unknowableTPixel()
		}
		u.pass(stepTightData, colours*int64(u.tpixel))
	case stepTightData:
		if u.dataSize < 12 {
			u.pass(stepRectDone, u.dataSize)
		} else {
			u.expect(stepCompactLength, 1)
		}
	case stepCompactLength:
		if a[len(a)-1]&0x80 != 0 && len(a) < 3 {
			u.need++
			return false, nil
		}
		n := int64(a[0] & 0x7f)
		if len(a) > 1 {
			n |= int64(a[1]&0x7f) << 7
		}
		if len(a) > 2 {
			n |= int64(a[2]) << 14
		}
		u.pass(stepRectDone, n)

	case stepCursorWithAlpha:
		// The cursor's pixels are 32-bit RGBA in an encoding of their own.
		inner := int32(binary.BigEndian.Uint32(a))
		switch inner {
		case rfb.EncodingRaw, rfb.EncodingRRE, rfb.EncodingCoRRE, rfb.EncodingHextile, rfb.EncodingZlib, rfb.EncodingZRLE:
			u.encoding, u.bpp, u.tpixel = inner, 4, 0
			return false, u.rect(inner)
		}
		return false, fmt.Errorf("rfbframe: encoding %d (%s) inside CursorWithAlpha %w", inner, EncodingName(inner), ErrCannotFrame)
	case stepVMwareCursor:
		switch a[0] {
		case 0: // AND and XOR masks
			u.pass(stepRectDone, 2*u.pixels())
		case 1: // RGBA
			u.pass(stepRectDone, 4*int64(u.w)*int64(u.h))
		default:
			return false, fmt.Errorf("rfbframe: VMware cursor type %d %w", a[0], ErrCannotFrame)
		}
	case stepDesktopName:
		u.pass(stepRectDone, int64(binary.BigEndian.Uint32(a)))
	case stepExtendedDesktopSize:
		u.pass(stepRectDone, 16*int64(a[0]))
	}
	return false, nil
}

func (u *update) observe(f *Framer) {
	if f.onRect != nil {
		f.onRect(rectInfo{x: u.x, y: u.y, w: u.w, h: u.h, header: u.header, encoding: u.encoding,
			start: u.rectAt, end: u.at, payload: u.skipAt, control: u.control, dataSize: u.dataSize})
	}
}

// pixels is the size of the current rectangle's pixels, uncompressed.
func (u *update) pixels() int64 { return int64(u.w) * int64(u.h) * int64(u.bpp) }

// rect sets up the framing of a rectangle's data in encoding e.
func (u *update) rect(e int32) error {
	switch e {
	case rfb.EncodingRaw:
		u.pass(stepRectDone, u.pixels())
	case rfb.EncodingCopyRect:
		u.pass(stepRectDone, 4)
	case rfb.EncodingRRE, rfb.EncodingCoRRE:
		u.expect(stepRRE, 4+u.bpp)
	case rfb.EncodingHextile:
		u.tileX, u.tileY = 0, 0
		if u.w == 0 || u.h == 0 {
			u.pass(stepRectDone, 0)
		} else {
			u.expect(stepHextileTile, 1)
		}
	case rfb.EncodingZlib, rfb.EncodingZRLE:
		// ZRLE's CPIXEL rule matters only inside the compressed data.
		u.expect(stepLength32, 4)
	case rfb.EncodingH264:
		u.expect(stepH264, 8)
	case rfb.EncodingTight, rfb.EncodingTightPNG:
		u.expect(stepTightControl, 1)

	case rfb.EncodingDesktopSize, rfb.EncodingQEMUExtendedKeyEvent, rfb.EncodingQEMUPointerMotionChange,
		rfb.EncodingQEMUAudio, rfb.EncodingExtendedMouseButtons:
		u.pass(stepRectDone, 0)
	case rfb.EncodingQEMULEDState:
		u.pass(stepRectDone, 1)
	case rfb.EncodingCursor:
		u.pass(stepRectDone, u.pixels()+int64((u.w+7)/8)*int64(u.h))
	case rfb.EncodingXCursor:
		if u.w == 0 || u.h == 0 {
			u.pass(stepRectDone, 0)
		} else {
			u.pass(stepRectDone, 6+2*int64((u.w+7)/8)*int64(u.h))
		}
	case rfb.EncodingCursorWithAlpha:
		u.expect(stepCursorWithAlpha, 4)
	case rfb.EncodingVMwareCursor:
		u.expect(stepVMwareCursor, 2)
	case rfb.EncodingDesktopName:
		u.expect(stepDesktopName, 4)
	case rfb.EncodingExtendedDesktopSize:
		u.expect(stepExtendedDesktopSize, 4)
	default:
		return fmt.Errorf("rfbframe: encoding %d (%s) %w", e, EncodingName(e), ErrCannotFrame)
	}
	return nil
}

// Hextile subencoding bits.
const (
	hextileRaw              = 1
	hextileBackground       = 2
	hextileForeground       = 4
	hextileAnySubrects      = 8
	hextileSubrectsColoured = 16
)

// hextileTile reads a tile's header as far as it is gathered and asks for
// the rest of it, or passes the tile's data.
func (u *update) hextileTile(a []byte) error {
	sub := a[0]
	if sub&^0x1f != 0 {
		// zlibhex's bits, undefined in Hextile (noVNC refuses them too).
		return fmt.Errorf("rfbframe: Hextile subencoding %#x: %w", sub, ErrMalformed)
	}
	if sub&hextileRaw != 0 {
		tw, th := min(16, u.w-u.tileX), min(16, u.h-u.tileY)
		u.pass(stepHextileNext, int64(tw*th*u.bpp))
		return nil
	}
	header := 1
	if sub&hextileBackground != 0 {
		header += u.bpp
	}
	if sub&hextileForeground != 0 {
		header += u.bpp
	}
	if sub&hextileAnySubrects != 0 {
		header++
	}
	if len(a) < header {
		u.need = header
		return nil
	}
	if sub&hextileAnySubrects == 0 {
		u.pass(stepHextileNext, 0)
		return nil
	}
	per := 2
	if sub&hextileSubrectsColoured != 0 {
		per += u.bpp
	}
	u.pass(stepHextileNext, int64(a[header-1])*int64(per))
	return nil
}

// Tight compression methods, the high nibble of compression-control.
const (
	tightFill = 0x8
	tightJPEG = 0x9
	tightPNG  = 0xa // TightPNG only; in Tight, BasicCompression Without Zlib
)

func (u *update) tightControl(c byte) error {
	u.control = c
	method := c >> 4
	switch {
	case method == tightFill:
		if u.tpixel == 0 {
			return u.unknowableTPixel()
		}
		u.pass(stepRectDone, int64(u.tpixel))
	case method == tightJPEG:
		u.expect(stepCompactLength, 1)
	case method == tightPNG && u.encoding == rfb.EncodingTightPNG:
		u.expect(stepCompactLength, 1)
	case method&0x8 == 0 && u.encoding == rfb.EncodingTight:
		if c&0x40 != 0 {
			u.expect(stepTightFilter, 1)
			return nil
		}
		return u.tightPixels(stepTightData, int64(u.w)*int64(u.h))
	default:
		// BasicCompression in TightPNG, PNG or BasicCompression Without
		// Zlib in Tight (never offered), and the undefined methods.
		return fmt.Errorf("rfbframe: %s compression-control %#x %w", EncodingName(u.encoding), c, ErrCannotFrame)
	}
	return nil
}

// tightPixels sets up the data of n pixels of TPIXEL size.
func (u *update) tightPixels(s step, n int64) error {
	if u.tpixel == 0 {
		return u.unknowableTPixel()
	}
	u.dataSize = n * int64(u.tpixel)
	u.pass(s, 0)
	return nil
}

func (u *update) unknowableTPixel() error {
	return fmt.Errorf("rfbframe: %s pixels in a 32-bit format with 8-bit colours but not depth-24 true colour (servers disagree on their size) %w",
		EncodingName(u.encoding), ErrCannotFrame)
}
