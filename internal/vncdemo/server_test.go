package vncdemo_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/internal/vncdemo"
)

type rgb [3]uint8

var (
	red     = rgb{255, 0, 0}
	green   = rgb{0, 255, 0}
	blue    = rgb{0, 0, 255}
	white   = rgb{255, 255, 255}
	black   = rgb{0, 0, 0}
	yellow  = rgb{255, 255, 0}
	magenta = rgb{255, 0, 255}
	gray    = rgb{32, 32, 32}
)

// start serves srv on a loopback port until the test ends.
func start(t *testing.T, srv *vncdemo.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	return testenv.Dial(t, addr, 20*time.Second)
}

type client struct {
	t  *testing.T
	c  net.Conn
	si rfb.ServerInit
	pf rfb.PixelFormat
	fb *rfb.Framebuffer
}

// connect completes the handshake and receives a full first frame.
func connect(t *testing.T, addr, password string) *client {
	t.Helper()
	c := dial(t, addr)
	si, err := rfb.ClientHandshake(c, password)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	cl := &client{t: t, c: c, si: si, pf: si.PixelFormat, fb: rfb.NewFramebuffer(si.Width, si.Height)}
	if err := rfb.SetEncodings(c, rfb.EncodingRaw); err != nil {
		t.Fatal(err)
	}
	cl.update(false)
	return cl
}

// update requests the whole screen and applies the next update.
func (cl *client) update(incremental bool) []rfb.Rect {
	cl.t.Helper()
	if err := rfb.RequestUpdate(cl.c, incremental, 0, 0, uint16(cl.si.Width), uint16(cl.si.Height)); err != nil {
		cl.t.Fatal(err)
	}
	rects, err := rfb.ReadFramebufferUpdate(cl.c, cl.pf)
	if err != nil {
		cl.t.Fatalf("reading update: %v", err)
	}
	cl.fb.Apply(rects)
	return rects
}

func (cl *client) at(x, y int) rgb {
	r, g, b := cl.fb.At(x, y)
	return rgb{r, g, b}
}

func (cl *client) expect(x, y int, want rgb) {
	cl.t.Helper()
	if got := cl.at(x, y); got != want {
		cl.t.Errorf("pixel (%d,%d) = %v, want %v", x, y, got, want)
	}
}

// waitFor takes incremental updates until pixel (x, y) has colour want.
func (cl *client) waitFor(x, y int, want rgb) {
	cl.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for cl.at(x, y) != want {
		if time.Now().After(deadline) {
			cl.t.Fatalf("pixel (%d,%d) is %v, still not %v", x, y, cl.at(x, y), want)
		}
		cl.update(true)
	}
}

func TestPicture(t *testing.T) {
	addr := start(t, &vncdemo.Server{})
	cl := connect(t, addr, "")
	if cl.si.Width != 800 || cl.si.Height != 600 || cl.si.Name != "vncdemo" {
		t.Fatalf("ServerInit %+v", cl.si)
	}
	for _, p := range []struct {
		x, y int
		c    rgb
	}{
		{0, 0, red}, {31, 31, red}, {32, 32, gray},
		{768, 0, green}, {799, 31, green}, {767, 0, gray},
		{0, 568, blue}, {31, 599, blue}, {0, 567, gray},
		{768, 568, white}, {799, 599, white},
		{48, 0, black}, {79, 31, black}, {47, 0, gray}, {80, 0, gray},
		{400, 100, gray}, {100, 500, gray},
	} {
		cl.expect(p.x, p.y, p.c)
	}
}

func TestKeyTurnsIndicatorYellow(t *testing.T) {
	addr := start(t, &vncdemo.Server{})
	cl := connect(t, addr, "")
	cl.expect(60, 10, black)
	if err := rfb.KeyEvent(cl.c, true, 'a'); err != nil {
		t.Fatal(err)
	}
	if err := rfb.KeyEvent(cl.c, false, 'a'); err != nil {
		t.Fatal(err)
	}
	cl.waitFor(60, 10, yellow)
	cl.expect(48, 0, yellow)
	cl.expect(79, 31, yellow)
	// The typed "A": the middle of its top row is lit.
	cl.waitFor(96+2*2, 9, rgb{220, 220, 220})

	// A client connecting later sees the indicator still yellow.
	late := connect(t, addr, "")
	late.expect(60, 10, yellow)
}

func TestClickDrawsMagenta(t *testing.T) {
	addr := start(t, &vncdemo.Server{})
	cl := connect(t, addr, "")
	click := func(x, y uint16) {
		t.Helper()
		for _, mask := range []uint8{0, 1, 0} {
			if err := rfb.PointerEvent(cl.c, mask, x, y); err != nil {
				t.Fatal(err)
			}
		}
	}
	click(200, 150)
	click(10, 10)  // on the red corner: it stays red
	click(60, 590) // near the bottom edge: clipped, no panic
	cl.waitFor(200, 150, magenta)
	cl.waitFor(60, 590, magenta)
	for _, p := range [][2]int{{196, 146}, {204, 154}, {196, 154}, {204, 146}} {
		cl.expect(p[0], p[1], magenta)
	}
	for _, p := range [][2]int{{195, 150}, {205, 150}, {200, 145}, {200, 155}} {
		cl.expect(p[0], p[1], gray)
	}
	cl.expect(10, 10, red)
	cl.expect(14, 14, red)

	// Moving with the button held draws nothing more.
	for _, e := range []struct {
		mask uint8
		x    uint16
	}{{1, 300}, {1, 310}, {0, 320}} {
		if err := rfb.PointerEvent(cl.c, e.mask, e.x, 300); err != nil {
			t.Fatal(err)
		}
	}
	click(500, 400) // a later click proves the events above were handled
	cl.waitFor(500, 400, magenta)
	cl.expect(300, 300, magenta)
	cl.expect(310, 300, gray)
}

func TestHandshakeVersions(t *testing.T) {
	open := start(t, &vncdemo.Server{Name: "open"})
	locked := start(t, &vncdemo.Server{Name: "locked", Password: "s3cret"})
	for _, minor := range []int{3, 7, 8} {
		t.Run(fmt.Sprintf("3.%d", minor), func(t *testing.T) {
			si, err := rfb.ClientHandshakeVersion(dial(t, open), "", minor)
			if err != nil || si.Minor != minor || si.Security != rfb.SecurityNone || si.Name != "open" || si.Width != 800 {
				t.Errorf("security None: %+v, %v", si, err)
			}
			si, err = rfb.ClientHandshakeVersion(dial(t, locked), "s3cret", minor)
			if err != nil || si.Minor != minor || si.Security != rfb.SecurityVNCAuth || si.Name != "locked" || si.Height != 600 {
				t.Errorf("right password: %+v, %v", si, err)
			}
			_, err = rfb.ClientHandshakeVersion(dial(t, locked), "wrong", minor)
			if !errors.Is(err, rfb.ErrAuthFailed) {
				t.Errorf("wrong password: %v, want ErrAuthFailed", err)
			}
			_, err = rfb.ClientHandshakeVersion(dial(t, locked), "", minor)
			if !errors.Is(err, rfb.ErrAuthFailed) {
				t.Errorf("no password: %v, want ErrAuthFailed", err)
			}
		})
	}
}

// TestHandshakeBytes pins the wire bytes of the older versions, where client
// and server could otherwise agree on the same mistake.
func TestHandshakeBytes(t *testing.T) {
	addr := start(t, &vncdemo.Server{Width: 640, Height: 480})
	read := func(c net.Conn, n int) []byte {
		t.Helper()
		b := make([]byte, n)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	serverInit := []byte{0x02, 0x80, 0x01, 0xe0} // 640x480

	c := dial(t, addr)
	if got := string(read(c, 12)); got != "RFB 003.008\n" {
		t.Fatalf("greeting %q", got)
	}
	c.Write([]byte("RFB 003.003\n"))
	if got := read(c, 4); !bytes.Equal(got, []byte{0, 0, 0, 1}) {
		t.Fatalf("3.3 security type %v, want None as uint32", got)
	}
	c.Write([]byte{1})
	if got := read(c, 4); !bytes.Equal(got, serverInit) {
		t.Fatalf("3.3 ServerInit starts %v", got)
	}

	c = dial(t, addr)
	read(c, 12)
	c.Write([]byte("RFB 003.007\n"))
	if got := read(c, 2); !bytes.Equal(got, []byte{1, 1}) {
		t.Fatalf("3.7 security types %v", got)
	}
	c.Write([]byte{1, 1}) // None, then ClientInit: no SecurityResult in between
	if got := read(c, 4); !bytes.Equal(got, serverInit) {
		t.Fatalf("3.7 ServerInit starts %v", got)
	}

	c = dial(t, addr)
	read(c, 12)
	c.Write([]byte("RFB 003.008\n"))
	read(c, 2)
	c.Write([]byte{1})
	if got := read(c, 4); !bytes.Equal(got, []byte{0, 0, 0, 0}) {
		t.Fatalf("3.8 SecurityResult %v", got)
	}
}

func TestTwoClients(t *testing.T) {
	addr := start(t, &vncdemo.Server{Width: 320, Height: 240})
	a := connect(t, addr, "")
	b := connect(t, addr, "")
	for _, m := range []uint8{1, 0} {
		if err := rfb.PointerEvent(a.c, m, 150, 100); err != nil {
			t.Fatal(err)
		}
	}
	b.waitFor(150, 100, magenta)
	a.waitFor(150, 100, magenta)
	if err := rfb.KeyEvent(b.c, true, 0xffe1); err != nil { // Shift
		t.Fatal(err)
	}
	a.waitFor(50, 5, yellow)
	b.waitFor(50, 5, yellow)
}

func TestPixelFormats(t *testing.T) {
	addr := start(t, &vncdemo.Server{Width: 320, Height: 200})
	formats := []rfb.PixelFormat{
		{BitsPerPixel: 32, Depth: 24, BigEndian: true, TrueColour: true, RedMax: 255, GreenMax: 255, BlueMax: 255, RedShift: 0, GreenShift: 8, BlueShift: 16},
		{BitsPerPixel: 32, Depth: 24, TrueColour: true, RedMax: 255, GreenMax: 255, BlueMax: 255, RedShift: 24, GreenShift: 16, BlueShift: 8},
		{BitsPerPixel: 16, Depth: 16, TrueColour: true, RedMax: 31, GreenMax: 63, BlueMax: 31, RedShift: 11, GreenShift: 5, BlueShift: 0},
		{BitsPerPixel: 16, Depth: 15, BigEndian: true, TrueColour: true, RedMax: 31, GreenMax: 31, BlueMax: 31, RedShift: 10, GreenShift: 5, BlueShift: 0},
		{BitsPerPixel: 8, Depth: 8, TrueColour: true, RedMax: 7, GreenMax: 7, BlueMax: 3, RedShift: 0, GreenShift: 3, BlueShift: 6},
	}
	for _, pf := range formats {
		t.Run(fmt.Sprintf("%dbpp-be%v-r%d", pf.BitsPerPixel, pf.BigEndian, pf.RedShift), func(t *testing.T) {
			cl := connect(t, addr, "")
			if err := rfb.SetPixelFormat(cl.c, pf); err != nil {
				t.Fatal(err)
			}
			cl.pf = pf
			cl.update(false)
			cl.expect(0, 0, red)
			cl.expect(319, 0, green)
			cl.expect(0, 199, blue)
			cl.expect(319, 199, white)
			cl.expect(60, 10, black)
		})
	}
}

func TestIncrementalUpdatesAreSmall(t *testing.T) {
	addr := start(t, &vncdemo.Server{})
	cl := connect(t, addr, "")
	for range 5 {
		area := 0
		for _, r := range cl.update(true) {
			area += r.Width * r.Height
		}
		if area == 0 || area > 800*600/10 {
			t.Fatalf("incremental update of %d pixels", area)
		}
	}
}

func TestSmallGeometry(t *testing.T) {
	// Everything is clipped; the corners overlap, bottom-right on top.
	addr := start(t, &vncdemo.Server{Width: 20, Height: 10})
	cl := connect(t, addr, "")
	cl.expect(19, 9, white)
	for _, m := range []uint8{1, 0} {
		rfb.PointerEvent(cl.c, m, 65535, 65535)
	}
	rfb.PointerEvent(cl.c, 1, 0, 0)
	rfb.KeyEvent(cl.c, true, 'x')
	cl.update(false)
	cl.expect(0, 0, white)
}

func TestBadInputClosesConnection(t *testing.T) {
	addr := start(t, &vncdemo.Server{Width: 320, Height: 240})
	badPF := func(pf rfb.PixelFormat) []byte {
		var b bytes.Buffer
		rfb.SetPixelFormat(&b, pf)
		return b.Bytes()
	}
	colourMap := rfb.PixelFormat32
	colourMap.TrueColour = false
	bpp24 := rfb.PixelFormat32
	bpp24.BitsPerPixel = 24
	cases := map[string][]byte{
		"unknown message":     {200, 1, 2, 3},
		"huge cut text":       {6, 0, 0, 0, 0xff, 0xff, 0xff, 0xff},
		"cut text over limit": binary.BigEndian.AppendUint32([]byte{6, 0, 0, 0}, 1<<20+1),
		"colour map format":   badPF(colourMap),
		"24 bits per pixel":   badPF(bpp24),
	}
	for name, msg := range cases {
		t.Run(name, func(t *testing.T) {
			cl := connect(t, addr, "")
			if _, err := cl.c.Write(msg); err != nil {
				t.Fatal(err)
			}
			// The server closes: reading (and discarding updates) ends in EOF.
			_, err := io.Copy(io.Discard, cl.c)
			if err != nil {
				t.Fatalf("connection not closed cleanly: %v", err)
			}
		})
	}
	t.Run("garbage version", func(t *testing.T) {
		c := dial(t, addr)
		c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatal(err)
		}
	})
	// The server still serves.
	connect(t, addr, "")
}

func TestCutTextIsAccepted(t *testing.T) {
	addr := start(t, &vncdemo.Server{Width: 320, Height: 240})
	cl := connect(t, addr, "")
	if err := rfb.ClientCutText(cl.c, bytes.Repeat([]byte("x"), 100000)); err != nil {
		t.Fatal(err)
	}
	cl.update(false)
	cl.expect(0, 0, red)
}

func TestCloseEndsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	srv := &vncdemo.Server{Width: 320, Height: 240, Password: "pw"}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	addr := l.Addr().String()
	connect(t, addr, "pw")
	connect(t, addr, "pw")
	idle := connect(t, addr, "pw")
	rfb.RequestUpdate(idle.c, true, 0, 0, 320, 240) // a pending request
	dial(t, addr)                                   // stuck in the handshake

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := srv.Serve(l); err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
}
