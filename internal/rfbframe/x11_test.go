package rfbframe

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"
)

// x11 is the least of an X11 client that gives Xvnc something to send:
// pictures drawn on the root window and a root cursor that changes. It
// talks the protocol itself so the tests need no X client programs.
type x11 struct {
	t         testing.TB
	c         net.Conn
	root      uint32
	gc        uint32
	font      uint32
	idBase    uint32
	nextID    uint32
	maxWords  int
	rootDepth byte
}

// dialX11 connects to display :n through its Unix socket; Xvnc started
// without -auth lets local clients in.
func dialX11(t testing.TB, display int) *x11 {
	t.Helper()
	c, err := net.DialTimeout("unix", "/tmp/.X11-unix/X"+strconv.Itoa(display), 5*time.Second)
	if err != nil {
		t.Fatalf("connecting to X display :%d: %v", display, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	x := &x11{t: t, c: c}
	// Little-endian, protocol 11.0, no authorization.
	x.send([]byte{'l', 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	var h [8]byte
	x.read(h[:])
	extra := make([]byte, 4*int(binary.LittleEndian.Uint16(h[6:])))
	x.read(extra)
	if h[0] != 1 {
		t.Fatalf("X server refused the connection: %q", extra[:min(int(h[1]), len(extra))])
	}
	x.idBase = binary.LittleEndian.Uint32(extra[4:])
	vendorLen := int(binary.LittleEndian.Uint16(extra[16:]))
	x.maxWords = int(binary.LittleEndian.Uint16(extra[18:]))
	formats := int(extra[21])
	screen := extra[32+(vendorLen+3)&^3+8*formats:]
	x.root = binary.LittleEndian.Uint32(screen[0:])
	x.rootDepth = screen[38]

	x.gc = x.id()
	x.request(55, 0, le32(x.gc), le32(x.root), le32(0)) // CreateGC
	x.font = x.id()
	name := "cursor"
	x.request(45, 0, le32(x.font), le16(uint16(len(name))), le16(0), []byte(name)) // OpenFont
	x.sync()
	return x
}

func (x *x11) id() uint32 {
	x.nextID++
	return x.idBase | x.nextID
}

func (x *x11) send(b []byte) {
	if _, err := x.c.Write(b); err != nil {
		x.t.Fatalf("writing to X: %v", err)
	}
}

func (x *x11) read(b []byte) {
	if _, err := io.ReadFull(x.c, b); err != nil {
		x.t.Fatalf("reading from X: %v", err)
	}
}

// request sends an X request of the given opcode and its data, padded.
func (x *x11) request(opcode, detail byte, data ...[]byte) {
	body := cat(data...)
	body = append(body, make([]byte, (4-len(body)%4)%4)...)
	x.send(cat([]byte{opcode, detail}, le16(uint16(1+len(body)/4)), body))
}

// sync waits for the server to have handled every request so far, and
// fails the test on an X error.
func (x *x11) sync() {
	x.request(43, 0) // GetInputFocus
	var r [32]byte
	x.read(r[:])
	if r[0] == 0 {
		x.t.Fatalf("X error %d (request %d.%d)", r[1], r[10], binary.LittleEndian.Uint16(r[8:]))
	}
	if r[0] != 1 {
		x.t.Fatalf("unexpected X packet %d", r[0])
	}
}

// picture draws a w×h picture at (px, py): a colour gradient with noise,
// which TigerVNC sends as JPEG, beside flat and two-colour areas.
func (x *x11) picture(px, py, w, h int, seed uint64) {
	rnd := rand.New(rand.NewPCG(seed, 1))
	rows := max(1, (x.maxWords*4-64)/(4*w))
	for y0 := 0; y0 < h; y0 += rows {
		n := min(rows, h-y0)
		img := make([]byte, 0, 4*w*n)
		for y := y0; y < y0+n; y++ {
			for xx := range w {
				var r, g, b int
				switch {
				case xx < w/2:
					r = 255 * xx / w
					g = 255 * y / h
					b = 128 + rnd.IntN(64)
				case y < h/2 && (xx/4+y/4)%2 == 0:
					r, g, b = 250, 250, 250
				case y < h/2:
					r, g, b = 10, 20, 30
				default:
					r, g, b = 40, 90, int(seed%200)
				}
				img = append(img, byte(b), byte(g), byte(r), 0)
			}
		}
		x.request(72, 2, le32(x.root), le32(x.gc), le16(uint16(w)), le16(uint16(n)), // PutImage, ZPixmap
			le16(uint16(px)), le16(uint16(py+y0)), []byte{0, x.rootDepth, 0, 0}, img)
	}
	x.sync()
}

// cursor sets the root window's cursor to a glyph of the cursor font.
func (x *x11) cursor(glyph uint16) {
	id := x.id()
	x.request(94, 0, le32(id), le32(x.font), le32(x.font), le16(glyph), le16(glyph+1), // CreateGlyphCursor
		le16(0), le16(0), le16(0), le16(0xffff), le16(0xffff), le16(0xffff))
	x.request(2, 0, le32(x.root), le32(0x4000), le32(id)) // ChangeWindowAttributes: cursor
	x.sync()
}

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
