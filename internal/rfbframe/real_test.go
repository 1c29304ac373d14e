package rfbframe

import (
	"bytes"
	"compress/zlib"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// Streams of real VNC servers, captured by the tests below, are checked
// twice: the framer's spans must cover every byte with messages whatever
// the chunks the stream arrives in, and what it says about each rectangle
// must hold up against the data itself (compressed runs inflate to the
// size the rectangle needs, JPEG and PNG runs are whole pictures,
// rectangles lie inside the screen).
//
// With RFBFRAME_RECORD=1, TestRealStreams also writes the first 64 KiB (to
// a message boundary) of each capture to testdata/<scenario>.rfb, which
// TestRecordedStreams and BenchmarkFramer read: a line
// "rfbframe stream <width>x<height> <pixel format in hex>\n", then the
// server's bytes after ServerInit, the client's SetPixelFormat already in
// effect. Recorded with TigerVNC 1.12 and QEMU 7.2 (Debian 12):
//
//	RFBFRAME_RECORD=1 go test -run TestRealStreams ./internal/rfbframe/

const recordLimit = 64 << 10

// scenario is one capture: a server, the pixel format and encodings the
// client asks for, and what the stream must then show.
type scenario struct {
	name      string
	server    string // "xvnc" or "qemu"
	pf        rfb.PixelFormat
	encodings []int32
	// clipboard: set Xvnc's clipboard (with xclip) during the capture.
	clipboard bool
	want      []string // coverage keys the capture must hold
}

// noVNCOffer is noVNC 1.7's SetEncodings on a 24-bit screen with H.264.
var noVNCOffer = []int32{rfb.EncodingCopyRect, rfb.EncodingH264, rfb.EncodingTight, rfb.EncodingTightPNG, rfb.EncodingZRLE,
	rfb.EncodingJPEG, rfb.EncodingHextile, rfb.EncodingRRE, rfb.EncodingZlib, rfb.EncodingRaw,
	rfb.EncodingJPEGQuality0 + 6, rfb.EncodingCompressLevel0 + 2,
	rfb.EncodingDesktopSize, rfb.EncodingLastRect, rfb.EncodingQEMUExtendedKeyEvent, rfb.EncodingQEMULEDState,
	rfb.EncodingExtendedDesktopSize, rfb.EncodingXvp, rfb.EncodingFence, rfb.EncodingContinuousUpdates,
	rfb.EncodingDesktopName, rfb.EncodingExtendedClipboard, rfb.EncodingExtendedMouseButtons,
	rfb.EncodingVMwareCursor, rfb.EncodingCursor}

var scenarios = []scenario{
	{name: "xvnc-novnc", server: "xvnc", pf: pf32, encodings: noVNCOffer, clipboard: true,
		want: []string{"Tight JPEG", "Tight fill", "rect ExtendedDesktopSize", "rect VMware cursor", "ExtendedClipboard provide", "ServerFence"}},
	{name: "xvnc-zrle", server: "xvnc", pf: pf32, clipboard: true,
		encodings: []int32{rfb.EncodingZRLE, rfb.EncodingCopyRect, rfb.EncodingRaw, rfb.EncodingDesktopSize,
			rfb.EncodingExtendedDesktopSize, rfb.EncodingCursorWithAlpha, rfb.EncodingCursor, rfb.EncodingLastRect},
		want: []string{"rect ZRLE", "rect CursorWithAlpha", "ServerCutText"}},
	{name: "xvnc-tight16", server: "xvnc", pf: pf16,
		encodings: []int32{rfb.EncodingTight, rfb.EncodingCompressLevel0 + 9, rfb.EncodingDesktopSize, rfb.EncodingCursor},
		want:      []string{"Tight copy", "Tight fill", "rect Cursor"}},
	{name: "xvnc-hextile16", server: "xvnc", pf: pf16,
		encodings: []int32{rfb.EncodingHextile, rfb.EncodingRaw, rfb.EncodingDesktopSize, rfb.EncodingXCursor},
		want:      []string{"rect Hextile", "rect XCursor"}},
	{name: "xvnc-rre8", server: "xvnc", pf: pf8,
		encodings: []int32{rfb.EncodingRRE, rfb.EncodingRaw, rfb.EncodingCursor},
		want:      []string{"rect RRE", "rect Cursor"}},
	{name: "xvnc-colourmap8", server: "xvnc", pf: pfColourMap,
		encodings: []int32{rfb.EncodingTight, rfb.EncodingRaw, rfb.EncodingCursor},
		want:      []string{"SetColourMapEntries", "Tight palette", "rect Cursor"}},
	{name: "qemu-tight", server: "qemu", pf: pf32,
		encodings: []int32{rfb.EncodingTight, rfb.EncodingJPEGQuality0 + 5, rfb.EncodingCompressLevel0 + 6,
			rfb.EncodingExtendedDesktopSize, rfb.EncodingDesktopSize, rfb.EncodingQEMULEDState,
			rfb.EncodingQEMUExtendedKeyEvent, rfb.EncodingQEMUPointerMotionChange, rfb.EncodingCursor, rfb.EncodingLastRect},
		want: []string{"rect Tight", "rect ExtendedDesktopSize", "rect QEMU LED state", "rect QEMU extended key event"}},
	{name: "qemu-tightpng", server: "qemu", pf: pf32,
		encodings: []int32{rfb.EncodingTightPNG, rfb.EncodingJPEGQuality0 + 5, rfb.EncodingDesktopSize},
		want:      []string{"TightPNG PNG", "rect DesktopSize"}},
	{name: "qemu-zlib16", server: "qemu", pf: pf16,
		encodings: []int32{rfb.EncodingZlib, rfb.EncodingDesktopSize, rfb.EncodingQEMULEDState},
		want:      []string{"rect zlib", "rect DesktopSize"}},
}

// pfColourMap is 8 bits a pixel through a colour map, which TigerVNC
// fills with SetColourMapEntries.
var pfColourMap = rfb.PixelFormat{BitsPerPixel: 8, Depth: 8}

func TestRealStreams(t *testing.T) {
	record := os.Getenv("RFBFRAME_RECORD") == "1"
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			if sc.clipboard {
				testenv.Require(t, "xclip", "xclip")
			}
			var addr string
			var display int
			if sc.server == "xvnc" {
				addr, display = startXvnc(t)
			} else {
				addr = testenv.StartQEMU(t, testenv.QEMU{})
			}
			s := startSession(t, addr, sc.pf, sc.encodings)
			if sc.server == "xvnc" {
				s.playXvnc(display, sc.clipboard)
			} else {
				// QEMU boots SeaBIOS: text, and the display's mode changes.
				time.Sleep(4 * time.Second)
			}
			stream := s.finish()
			cov := verify(t, s.width0, s.height0, sc.pf, stream)
			t.Logf("%d bytes: %v", len(stream), coverageString(cov))
			for _, w := range sc.want {
				if cov[w] == 0 {
					t.Errorf("the stream holds no %q", w)
				}
			}
			if record && !t.Failed() {
				writeRecording(t, sc, s, stream)
			}
		})
	}
}

// TestRecordedStreams checks the streams in testdata as TestRealStreams
// checks live ones, so that a machine without the servers still frames
// real data.
func TestRecordedStreams(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.rfb")
	if len(files) == 0 {
		t.Fatal("no recorded streams in testdata")
	}
	all := map[string]int{}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			w, h, pf, stream := readRecording(t, file)
			cov := verify(t, w, h, pf, stream)
			t.Logf("%d bytes: %v", len(stream), coverageString(cov))
			for k, n := range cov {
				all[k] += n
			}
		})
	}
	for _, want := range []string{
		"Tight JPEG", "Tight palette", "Tight fill", "Tight copy", "Tight uncompressed", "Tight stream 0 inflated",
		"TightPNG PNG", "TightPNG fill", "rect ZRLE", "ZRLE inflated", "rect Hextile", "rect RRE", "rect zlib", "zlib inflated",
		"rect CursorWithAlpha", "rect VMware cursor", "rect XCursor", "rect Cursor", "rect ExtendedDesktopSize",
		"rect DesktopSize", "rect LastRect", "rect QEMU LED state", "ExtendedClipboard provide", "ServerCutText",
		"ServerFence", "EndOfContinuousUpdates", "SetColourMapEntries",
	} {
		if all[want] == 0 {
			t.Errorf("no recorded stream holds %q", want)
		}
	}
}

// startXvnc starts Xvnc on a small screen and returns its RFB address and
// X display number.
func startXvnc(t *testing.T) (string, int) {
	bin := testenv.Require(t, "Xvnc", "tigervnc-standalone-server")
	port := testenv.FreePort(t)
	// Displays apart from those of testenv.StartXvnc (100 to 899), and
	// not one whose lock a killed server left behind.
	display := 2000 + port%3000
	for {
		if _, err := os.Stat(fmt.Sprintf("/tmp/.X%d-lock", display)); errors.Is(err, os.ErrNotExist) {
			break
		}
		display++
	}
	testenv.Start(t, bin, ":"+strconv.Itoa(display), "-localhost", "-rfbport", strconv.Itoa(port),
		"-geometry", "320x240", "-depth", "24", "-nolisten", "tcp", "-SecurityTypes", "None")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := testenv.WaitDial("tcp", addr, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitDial("unix", "/tmp/.X11-unix/X"+strconv.Itoa(display), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return addr, display
}

// session is a client of a real server whose stream is framed as the
// proxy frames it, with the framer's verdicts acted on: an update request
// after each update, a clipboard request after a notify.
type session struct {
	t     *testing.T
	conn  net.Conn
	f     *Framer
	offer Offer

	width0, height0 int // ServerInit's

	mu       sync.Mutex
	stream   []byte
	width    int
	height   int
	screenID uint32
	screens  bool // an ExtendedDesktopSize told the screen's id

	msgStart int64 // stream offset of the message being read
	// continuous: updates come without requests, as noVNC asks once the
	// server has shown it can (with an EndOfContinuousUpdates).
	continuous atomic.Bool

	stop   atomic.Bool
	done   chan error
	exited chan struct{}
}

func startSession(t *testing.T, addr string, pf rfb.PixelFormat, encodings []int32) *session {
	conn := testenv.Dial(t, addr, 2*time.Minute)
	si, err := rfb.ClientHandshake(conn, "")
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	f, err := NewFramer(si.PixelFormat)
	if err != nil {
		t.Fatal(err)
	}
	s := &session{t: t, conn: conn, f: f, width0: si.Width, height0: si.Height, width: si.Width, height: si.Height,
		done: make(chan error, 1), exited: make(chan struct{})}
	// A test that fails early leaves no reader behind.
	t.Cleanup(func() {
		s.stop.Store(true)
		conn.Close()
		<-s.exited
	})
	f.onRect = s.rect
	// As the proxy does: the framer learns the format before the server.
	if err := f.SetPixelFormat(pf); err != nil {
		t.Fatal(err)
	}
	msg, offer, err := RewriteSetEncodings(nil, encodingsMessage(encodings...))
	if err != nil {
		t.Fatal(err)
	}
	s.offer = offer
	if err := rfb.SetPixelFormat(conn, pf); err != nil {
		t.Fatal(err)
	}
	s.write(msg)
	if err := rfb.RequestUpdate(conn, false, 0, 0, uint16(si.Width), uint16(si.Height)); err != nil {
		t.Fatal(err)
	}
	go s.read()
	return s
}

func (s *session) write(b []byte) {
	if _, err := s.conn.Write(b); err != nil && !s.stop.Load() {
		s.t.Errorf("writing to the server: %v", err)
	}
}

// read frames the server's stream the way a relay does: what Next leaves
// of a read waits at the start of the buffer for the next one.
func (s *session) read() {
	defer close(s.exited)
	buf := make([]byte, 32<<10)
	held := 0
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, rerr := s.conn.Read(buf[held:])
		s.mu.Lock()
		s.stream = append(s.stream, buf[held:held+n]...)
		s.mu.Unlock()
		p := buf[:held+n]
		for len(p) > 0 {
			sp, err := s.f.Next(p)
			if err != nil {
				s.done <- err
				return
			}
			if sp.Len == 0 {
				break
			}
			s.span(sp)
			p = p[sp.Len:]
		}
		held = copy(buf, p)
		var ne net.Error
		switch {
		case rerr == nil:
		case errors.As(rerr, &ne) && ne.Timeout():
			if s.stop.Load() {
				if !s.f.AtBoundary() {
					s.done <- fmt.Errorf("the server went quiet inside a message, %d bytes held", held)
					return
				}
				s.done <- nil
				return
			}
		default:
			s.done <- fmt.Errorf("reading: %w", rerr)
			return
		}
	}
}

// span acts on a message as a client would.
func (s *session) span(sp Span) {
	if sp.Start {
		s.msgStart = s.f.Offset() - int64(sp.Len)
	}
	switch {
	case sp.Kind == EndOfContinuousUpdates && sp.End && !s.stop.Load() && !s.continuous.Load():
		s.continuous.Store(true)
		s.write(s.enableContinuousUpdates(true))
	case sp.Kind == ServerFence && sp.End:
		// TigerVNC paces its updates by fences; answer as noVNC does.
		s.mu.Lock()
		m := slices.Clone(s.stream[s.msgStart:s.f.Offset()])
		s.mu.Unlock()
		if flags := uint32(be32int(m[4:])); flags&0x80000000 != 0 {
			s.write(cat([]byte{rfb.MsgClientFence, 0, 0, 0}, be32(flags&^0x80000000), m[8:]))
		}
	case sp.Kind == FramebufferUpdate && sp.End && !s.stop.Load() && !s.continuous.Load():
		s.mu.Lock()
		w, h := s.width, s.height
		s.mu.Unlock()
		if err := rfb.RequestUpdate(s.conn, true, 0, 0, uint16(w), uint16(h)); err != nil && !s.stop.Load() {
			s.t.Errorf("requesting an update: %v", err)
		}
	case sp.Kind == ExtendedClipboard && sp.Start && sp.Clipboard&rfb.ClipboardNotify != 0 && sp.Clipboard&rfb.ClipboardText != 0:
		s.write(cat([]byte{rfb.MsgClientCutText, 0, 0, 0}, be32(uint32(0xfffffffc)), be32(rfb.ClipboardRequest|rfb.ClipboardText)))
	}
}

// rect follows the screen's size and id, for requests and SetDesktopSize.
func (s *session) rect(r rectInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.offer.Has(r.header) {
		s.t.Errorf("the server sent a rectangle in %s, which was not offered", EncodingName(r.header))
	}
	switch r.header {
	case rfb.EncodingDesktopSize:
		s.width, s.height = r.w, r.h
	case rfb.EncodingExtendedDesktopSize:
		if r.y == 0 && r.end-r.start >= 12+4+16 {
			s.width, s.height = r.w, r.h
			s.screenID = uint32(be32int(s.stream[r.start+16:]))
			s.screens = true
		}
	}
}

func be32int(b []byte) int64 { return int64(b[0])<<24 | int64(b[1])<<16 | int64(b[2])<<8 | int64(b[3]) }

// playXvnc gives Xvnc things to send: pictures, cursors, resizes, a
// clipboard, a fence.
func (s *session) playXvnc(display int, clipboard bool) {
	t := s.t
	x := dialX11(t, display)
	pause := func() { time.Sleep(400 * time.Millisecond) }
	pause()
	x.picture(0, 0, 160, 120, 1)
	pause()
	x.cursor(150) // watch
	pause()
	x.picture(40, 30, 120, 80, 2)
	pause()
	s.mu.Lock()
	id, screens := s.screenID, s.screens
	s.mu.Unlock()
	if screens {
		s.write(setDesktopSize(id, 256, 192))
		pause()
		x.picture(10, 10, 80, 60, 3)
		pause()
		s.write(setDesktopSize(id, 320, 240))
		pause()
	}
	if clipboard {
		xclip := testenv.Require(t, "xclip", "xclip") // found before the capture began
		text := filepath.Join(t.TempDir(), "clipboard")
		if err := os.WriteFile(text, []byte("copied from the console"), 0o600); err != nil {
			t.Fatal(err)
		}
		// -quiet keeps xclip in the foreground, where the test can stop it.
		p := testenv.StartEnv(t, append(os.Environ(), "DISPLAY=:"+strconv.Itoa(display)),
			xclip, "-quiet", "-selection", "clipboard", "-i", text)
		pause()
		pause()
		p.Stop()
	}
	x.cursor(68) // left_ptr
	if s.offer.Has(rfb.EncodingFence) {
		// A fence request, which the server answers with a ServerFence.
		s.write(cat([]byte{rfb.MsgClientFence, 0, 0, 0}, be32(0x80000000|1), []byte{2, 'o', 'k'}))
	}
	pause()
	x.picture(220, 140, 100, 100, 4)
	pause()
}

func setDesktopSize(id uint32, w, h uint16) []byte {
	return cat([]byte{rfb.MsgSetDesktopSize, 0}, be16(w), be16(h), []byte{1, 0},
		be32(id), be16(0), be16(0), be16(w), be16(h), be32(0))
}

func (s *session) enableContinuousUpdates(on bool) []byte {
	s.mu.Lock()
	w, h := s.width, s.height
	s.mu.Unlock()
	b := []byte{rfb.MsgEnableContinuousUpdates, 0}
	if on {
		b[1] = 1
	}
	return cat(b, be16(0), be16(0), be16(uint16(w)), be16(uint16(h)))
}

// finish stops asking for updates and returns the stream once the server
// is quiet.
func (s *session) finish() []byte {
	s.stop.Store(true)
	if s.continuous.Load() {
		s.write(s.enableContinuousUpdates(false))
	}
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Fatalf("framing the live stream: %v", err)
		}
	case <-time.After(30 * time.Second):
		s.t.Fatal("the server did not go quiet")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream
}

// verify frames a stream whole, byte by byte and in random chunks, checks
// that the three agree, and checks each rectangle against its data. It
// returns what the stream holds, as counts of messages and rectangles.
func verify(t *testing.T, width, height int, pf rfb.PixelFormat, stream []byte) map[string]int {
	t.Helper()
	f, err := NewFramer(pf)
	if err != nil {
		t.Fatal(err)
	}
	c := newChecker(t, width, height, pf, stream)
	f.onRect = c.rect
	whole, err := frameChunks(t, f, [][]byte{stream})
	if err != nil {
		t.Fatalf("framing the stream: %v", err)
	}
	c.finish()

	var bytewise [][]byte
	for i := range stream {
		bytewise = append(bytewise, stream[i:i+1])
	}
	splits := map[string][][]byte{"byte by byte": bytewise}
	for seed := range uint64(3) {
		rnd := rand.New(rand.NewPCG(seed, 2))
		var chunks [][]byte
		for p := stream; len(p) > 0; {
			n := min(len(p), 1+rnd.IntN(4000))
			chunks = append(chunks, p[:n])
			p = p[n:]
		}
		splits[fmt.Sprintf("random chunks %d", seed)] = chunks
	}
	for name, chunks := range splits {
		f, _ := NewFramer(pf)
		got, err := frameChunks(t, f, chunks)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(got, whole) {
			t.Fatalf("%s: %d messages, whole: %d", name, len(got), len(whole))
		}
	}

	for _, m := range whole {
		key := m.Kind.String()
		if m.Kind == ExtendedClipboard {
			for bit, action := range []string{"caps", "request", "peek", "notify", "provide"} {
				if m.Clipboard&(rfb.ClipboardCaps<<bit) != 0 {
					key += " " + action
				}
			}
		}
		c.cov[key]++
	}
	return c.cov
}

// checker holds rectangles up against the data they cover.
type checker struct {
	t             *testing.T
	stream        []byte
	bpp           int
	width, height int
	cov           map[string]int

	tight    [4]zstream // Tight's four zlib streams
	zlib     zstream    // the zlib encoding's
	zrle     zstream
	problems int
}

// zstream gathers the compressed runs of one zlib stream and the size each
// must inflate to (-1: unknown, as with ZRLE).
type zstream struct {
	data  []byte
	sizes []int64
}

func newChecker(t *testing.T, width, height int, pf rfb.PixelFormat, stream []byte) *checker {
	return &checker{t: t, stream: stream, bpp: int(pf.BitsPerPixel) / 8, width: width, height: height, cov: map[string]int{}}
}

func (c *checker) errorf(format string, args ...any) {
	c.t.Helper()
	if c.problems++; c.problems < 10 {
		c.t.Errorf(format, args...)
	}
}

func (c *checker) rect(r rectInfo) {
	c.cov["rect "+EncodingName(r.header)]++
	payload := c.stream[r.payload:r.end]
	switch r.header {
	case rfb.EncodingDesktopSize:
		c.width, c.height = r.w, r.h
		return
	case rfb.EncodingExtendedDesktopSize:
		if r.y == 0 {
			c.width, c.height = r.w, r.h
		}
		return
	case rfb.EncodingCursorWithAlpha:
		c.cov["CursorWithAlpha in "+EncodingName(r.encoding)]++
	case rfb.EncodingRaw, rfb.EncodingCopyRect, rfb.EncodingRRE, rfb.EncodingCoRRE, rfb.EncodingHextile,
		rfb.EncodingZlib, rfb.EncodingTight, rfb.EncodingZRLE, rfb.EncodingH264, rfb.EncodingTightPNG:
		if r.x+r.w > c.width || r.y+r.h > c.height {
			c.errorf("%s rectangle %dx%d at %d,%d outside the %dx%d screen (byte %d)",
				EncodingName(r.header), r.w, r.h, r.x, r.y, c.width, c.height, r.start)
		}
	}
	bpp := c.bpp
	if r.header == rfb.EncodingCursorWithAlpha {
		bpp = 4
	}
	switch r.encoding {
	case rfb.EncodingZlib:
		c.zlib.add(payload, int64(r.w*r.h*bpp))
	case rfb.EncodingZRLE:
		c.zrle.add(payload, -1)
	case rfb.EncodingTight, rfb.EncodingTightPNG:
		for i := range c.tight {
			if r.control&(1<<i) != 0 {
				c.tight[i].check(c, fmt.Sprintf("Tight stream %d", i))
				c.tight[i] = zstream{}
			}
		}
		name := EncodingName(r.encoding)
		switch method := r.control >> 4; {
		case method == tightFill:
			c.cov[name+" fill"]++
		case method == tightJPEG:
			c.cov[name+" JPEG"]++
			if !bytes.HasPrefix(payload, []byte{0xff, 0xd8}) || !bytes.HasSuffix(payload, []byte{0xff, 0xd9}) {
				c.errorf("Tight JPEG data at byte %d is not one JPEG picture", r.payload)
			}
		case method == tightPNG:
			c.cov[name+" PNG"]++
			if !bytes.HasPrefix(payload, []byte("\x89PNG\r\n\x1a\n")) {
				c.errorf("TightPNG PNG data at byte %d is not a PNG picture", r.payload)
			}
		default:
			filter := "copy"
			if r.control&0x40 != 0 {
				filter = [...]string{"copy", "palette", "gradient"}[c.stream[r.start+13]]
			}
			c.cov[name+" "+filter]++
			if r.dataSize < 12 {
				c.cov[name+" uncompressed"]++
				if int64(len(payload)) != r.dataSize {
					c.errorf("Tight data of %d bytes, want %d", len(payload), r.dataSize)
				}
			} else {
				c.tight[r.control>>4&3].add(payload, r.dataSize)
			}
		}
	}
}

func (z *zstream) add(payload []byte, size int64) {
	z.data = append(z.data, payload...)
	z.sizes = append(z.sizes, size)
}

// check inflates the stream's runs in order: each must give exactly the
// bytes its rectangle needs (a run framed a byte off does not inflate).
func (z *zstream) check(c *checker, name string) {
	if len(z.sizes) == 0 {
		return
	}
	zr, err := zlib.NewReader(bytes.NewReader(z.data))
	if err != nil {
		c.errorf("%s: %v", name, err)
		return
	}
	buf := make([]byte, 64<<10)
	for i, size := range z.sizes {
		if size < 0 {
			// Unknown sizes: the runs must inflate as one stream, cut
			// only where the last run ends.
			n, err := io.Copy(io.Discard, zr)
			if n == 0 || err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
				c.errorf("%s: inflated %d bytes, then %v", name, n, err)
				return
			}
			break
		}
		for size > 0 {
			k := int(min(size, int64(len(buf))))
			if _, err := io.ReadFull(zr, buf[:k]); err != nil {
				c.errorf("%s: run %d of %d does not inflate to its rectangle's size: %v", name, i+1, len(z.sizes), err)
				return
			}
			size -= int64(k)
		}
	}
	c.cov[name+" inflated"]++
}

func (c *checker) finish() {
	for i := range c.tight {
		c.tight[i].check(c, fmt.Sprintf("Tight stream %d", i))
	}
	c.zlib.check(c, "zlib")
	c.zrle.check(c, "ZRLE")
}

func coverageString(cov map[string]int) string {
	var keys []string
	for k := range cov {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n\t%s: %d", k, cov[k])
	}
	return b.String()
}

const recordingMagic = "rfbframe stream "

func writeRecording(t *testing.T, sc scenario, s *session, stream []byte) {
	f, _ := NewFramer(sc.pf)
	msgs, err := frameChunks(t, f, [][]byte{stream})
	if err != nil {
		t.Fatal(err)
	}
	end := int64(0)
	for _, m := range msgs {
		if m.Off+m.Len > recordLimit {
			break
		}
		end = m.Off + m.Len
	}
	pfb := sc.pf.Marshal()
	header := fmt.Sprintf("%s%dx%d %s\n", recordingMagic, s.width0, s.height0, hex.EncodeToString(pfb[:]))
	file := filepath.Join("testdata", sc.name+".rfb")
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, append([]byte(header), stream[:end]...), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("recorded %d bytes in %s", end, file)
}

func readRecording(t testing.TB, file string) (int, int, rfb.PixelFormat, []byte) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	line, stream, ok := bytes.Cut(b, []byte("\n"))
	var w, h int
	var pfHex string
	if ok {
		_, err = fmt.Sscanf(string(line), recordingMagic+"%dx%d %s", &w, &h, &pfHex)
	}
	pfb, herr := hex.DecodeString(pfHex)
	if !ok || err != nil || herr != nil || len(pfb) != 16 {
		t.Fatalf("%s: not a recorded stream (%q)", file, line)
	}
	return w, h, rfb.UnmarshalPixelFormat(pfb), stream
}
