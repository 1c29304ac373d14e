package vncdemo

import (
	"encoding/binary"
	"errors"
	"slices"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

var errPixelFormat = errors.New("unsupported pixel format: only true colour at 8, 16 or 32 bits per pixel")

// encoder turns 0xRRGGBB pixels into a client's pixel format.
type encoder struct {
	bytesPerPixel int
	bigEndian     bool
	red           [256]uint32
	green         [256]uint32
	blue          [256]uint32
}

func newEncoder(pf rfb.PixelFormat) (*encoder, error) {
	if !pf.TrueColour || (pf.BitsPerPixel != 8 && pf.BitsPerPixel != 16 && pf.BitsPerPixel != 32) {
		return nil, errPixelFormat
	}
	e := &encoder{bytesPerPixel: pf.BytesPerPixel(), bigEndian: pf.BigEndian}
	for v := range 256 {
		e.red[v] = channel(v, pf.RedMax, pf.RedShift)
		e.green[v] = channel(v, pf.GreenMax, pf.GreenShift)
		e.blue[v] = channel(v, pf.BlueMax, pf.BlueShift)
	}
	return e, nil
}

// channel scales an 8-bit intensity to 0..max and moves it into place.
// Shifts of 32 or more give 0, as the bits fall outside the pixel.
func channel(v int, max uint16, shift uint8) uint32 {
	return uint32((v*int(max)+127)/255) << shift
}

// appendPixels appends the pixels of r, row by row.
func (e *encoder) appendPixels(dst []byte, pix []uint32, stride int, r rect) []byte {
	n := e.bytesPerPixel * (r.x1 - r.x0) * (r.y1 - r.y0)
	dst = slices.Grow(dst, n)
	out := dst[len(dst) : len(dst)+n]
	o := 0
	for y := r.y0; y < r.y1; y++ {
		row := pix[y*stride+r.x0 : y*stride+r.x1]
		// One loop per layout keeps the per-pixel work to table lookups.
		switch {
		case e.bytesPerPixel == 4 && e.bigEndian:
			for _, p := range row {
				binary.BigEndian.PutUint32(out[o:], e.red[p>>16&0xff]|e.green[p>>8&0xff]|e.blue[p&0xff])
				o += 4
			}
		case e.bytesPerPixel == 4:
			for _, p := range row {
				binary.LittleEndian.PutUint32(out[o:], e.red[p>>16&0xff]|e.green[p>>8&0xff]|e.blue[p&0xff])
				o += 4
			}
		case e.bytesPerPixel == 2 && e.bigEndian:
			for _, p := range row {
				binary.BigEndian.PutUint16(out[o:], uint16(e.red[p>>16&0xff]|e.green[p>>8&0xff]|e.blue[p&0xff]))
				o += 2
			}
		case e.bytesPerPixel == 2:
			for _, p := range row {
				binary.LittleEndian.PutUint16(out[o:], uint16(e.red[p>>16&0xff]|e.green[p>>8&0xff]|e.blue[p&0xff]))
				o += 2
			}
		default:
			for _, p := range row {
				out[o] = byte(e.red[p>>16&0xff] | e.green[p>>8&0xff] | e.blue[p&0xff])
				o++
			}
		}
	}
	return dst[:len(dst)+n]
}

// appendUpdate appends a FramebufferUpdate message with one Raw rectangle
// per entry of rects. The caller holds c.mu for reading.
func (c *canvas) appendUpdate(dst []byte, e *encoder, rects []rect) []byte {
	dst = append(dst, rfb.MsgFramebufferUpdate, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(rects)))
	for _, r := range rects {
		dst = binary.BigEndian.AppendUint16(dst, uint16(r.x0))
		dst = binary.BigEndian.AppendUint16(dst, uint16(r.y0))
		dst = binary.BigEndian.AppendUint16(dst, uint16(r.x1-r.x0))
		dst = binary.BigEndian.AppendUint16(dst, uint16(r.y1-r.y0))
		dst = binary.BigEndian.AppendUint32(dst, uint32(rfb.EncodingRaw))
		dst = e.appendPixels(dst, c.pix, c.w, r)
	}
	return dst
}
