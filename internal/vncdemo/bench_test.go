package vncdemo

import (
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// BenchmarkFullFrame encodes a whole 800x600 frame for a noVNC-style client.
func BenchmarkFullFrame(b *testing.B) {
	c := newCanvas(DefaultWidth, DefaultHeight, time.Now())
	enc, _ := newEncoder(rfb.PixelFormat{BitsPerPixel: 32, Depth: 24, TrueColour: true,
		RedMax: 255, GreenMax: 255, BlueMax: 255, GreenShift: 8, BlueShift: 16})
	var buf []byte
	b.SetBytes(int64(4 * DefaultWidth * DefaultHeight))
	for b.Loop() {
		buf = c.appendUpdate(buf[:0], enc, []rect{c.bounds()})
	}
}
