package vncdemo

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// FuzzClientMessages feeds arbitrary bytes through the message parser and
// applies what parses to a session on a small canvas, encoding every update
// it would send. Nothing may panic and no update may exceed the framebuffer.
func FuzzClientMessages(f *testing.F) {
	var seed bytes.Buffer
	rfb.SetPixelFormat(&seed, rfb.PixelFormat{BitsPerPixel: 16, Depth: 16, TrueColour: true, RedMax: 31, GreenMax: 63, BlueMax: 31, RedShift: 11, GreenShift: 5})
	rfb.SetEncodings(&seed, rfb.EncodingRaw, rfb.EncodingDesktopSize)
	rfb.RequestUpdate(&seed, false, 0, 0, 64, 48)
	rfb.KeyEvent(&seed, true, 'q')
	rfb.PointerEvent(&seed, 0, 10, 10)
	rfb.PointerEvent(&seed, 1, 10, 10)
	rfb.ClientCutText(&seed, []byte("hello"))
	rfb.RequestUpdate(&seed, true, 60, 40, 65535, 65535)
	f.Add(seed.Bytes())
	f.Add([]byte{0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 200, 100, 40, 0, 0, 0, 3, 0, 0, 0, 0, 0, 255, 255})
	f.Add(binary.BigEndian.AppendUint32([]byte{6, 0, 0, 0}, 0xffffffff))
	f.Add([]byte{2, 0, 255, 255, 0, 0})
	f.Add([]byte{255})

	f.Fuzz(func(t *testing.T, data []byte) {
		const w, h = 64, 48
		c := newCanvas(w, h, time.Unix(0, 0))
		enc, _ := newEncoder(rfb.PixelFormat32)
		ss := &session{canvas: c, enc: enc, wake: make(chan struct{}, 1), done: make(chan struct{})}
		c.observe(ss)
		r := bufio.NewReaderSize(bytes.NewReader(data), 4096)
		for range 1000 {
			m, err := readClientMessage(r)
			if err != nil {
				return
			}
			if err := ss.apply(m); err != nil {
				return
			}
			c.tick(time.Unix(int64(len(data)), 0))
			rects, enc := ss.nextUpdate()
			c.mu.RLock()
			out := c.appendUpdate(nil, enc, rects)
			c.mu.RUnlock()
			if limit := 4 + maxDirty*(12+4*w*h); len(out) > limit {
				t.Fatalf("update of %d bytes for a %dx%d screen", len(out), w, h)
			}
		}
	})
}

func TestRegion(t *testing.T) {
	var g region
	g = g.add(xywh(0, 0, 10, 10))
	g = g.add(xywh(2, 2, 3, 3)) // inside: nothing new
	g = g.add(xywh(20, 20, 5, 5))
	if len(g) != 2 {
		t.Fatalf("region %v", g)
	}
	g, sent := g.take(xywh(5, 0, 100, 100), nil)
	// Sent: the right half of the first rect and all of the second.
	if len(sent) != 2 || sent[0] != (rect{5, 0, 10, 10}) || sent[1] != (rect{20, 20, 25, 25}) {
		t.Fatalf("sent %v", sent)
	}
	if len(g) != 1 || g[0] != (rect{0, 0, 5, 10}) {
		t.Fatalf("left %v", g)
	}
	for i := range 100 {
		g = g.add(xywh(i*3, 0, 1, 1))
	}
	if len(g) > maxDirty {
		t.Fatalf("region grew to %d rects", len(g))
	}
}
