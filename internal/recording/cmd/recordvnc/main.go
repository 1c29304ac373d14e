// Command recordvnc connects to a VNC server as noVNC does, clicks and
// types if asked, and records what it receives with the recording package,
// the proxy's security-None handshake first: recordings of a known console
// for the player's browser test, made the way the proxy makes them.
//
// Usage:
//
//	recordvnc -target 127.0.0.1:5900 -dir DIR [-duration 6s] [-encoding raw|tight|zrle]
//	          [-click 200,450 -click-at 1.5s] [-keys abc -keys-at 2.5s] [-include-input]
//
// It asks for noVNC's pixel format (or -pixel-format bgrx) and an encoding (Raw by default; Tight
// or ZRLE with the pseudo-encodings noVNC offers that need no answer),
// requests an incremental update after each one, and ends after -duration.
// Then it prints one JSON object: the recording's id, the framebuffer size,
// the number of updates, and, with Raw, the clock of vncdemo's picture as
// it changed (the teal pixels on a grid of 8x8 cells over the clock, one
// string of 0 and 1 per change, with its time), which lets a test check
// what a player shows at a given time.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/recording"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbframe"
)

// formats are the pixel formats of -pixel-format: the one noVNC 1.7 asks
// for on a 24-bit screen, and the one of X servers and native viewers.
var formats = map[string]rfb.PixelFormat{
	"novnc": {BitsPerPixel: 32, Depth: 24, TrueColour: true,
		RedMax: 255, GreenMax: 255, BlueMax: 255, RedShift: 0, GreenShift: 8, BlueShift: 16},
	"bgrx": rfb.PixelFormat32,
}

// The clock of vncdemo's picture (internal/vncdemo/doc.go): eight
// characters of 5x7 glyphs drawn 8x scaled with a one-glyph-pixel gap,
// centred, in teal.
const (
	clockCell  = 8
	clockCols  = 8*6 - 1
	clockRows  = 7
	clockWidth = clockCols * clockCell
)

var teal = [3]uint8{0, 200, 200}

type grid struct {
	X    int `json:"x"`
	Y    int `json:"y"`
	Cols int `json:"cols"`
	Rows int `json:"rows"`
	Cell int `json:"cell"`
}

type clockChange struct {
	Ms   int64  `json:"ms"`
	Bits string `json:"bits"`
}

type result struct {
	ID        string        `json:"id"`
	Width     int           `json:"width"`
	Height    int           `json:"height"`
	Updates   int           `json:"updates"`
	ClockGrid *grid         `json:"clock_grid,omitempty"`
	Clock     []clockChange `json:"clock,omitempty"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "recordvnc:", err)
		os.Exit(1)
	}
}

func run() error {
	target := flag.String("target", "127.0.0.1:5900", "VNC server `host:port`")
	dir := flag.String("dir", "", "recording `directory`")
	duration := flag.Duration("duration", 6*time.Second, "how long to record")
	click := flag.String("click", "", "click the left button at `x,y`")
	clickAt := flag.Duration("click-at", 1500*time.Millisecond, "when to click")
	keys := flag.String("keys", "", "type these `characters`")
	keysAt := flag.Duration("keys-at", 2500*time.Millisecond, "when to type")
	includeInput := flag.Bool("include-input", false, "record the key and pointer events too")
	encoding := flag.String("encoding", "raw", "`raw`, tight or zrle")
	format := flag.String("pixel-format", "novnc", "`novnc` (red in the low byte) or bgrx (red in bits 16-23, as X servers and TigerVNC's viewer)")
	flag.Parse()
	if *dir == "" {
		return errors.New("-dir is required")
	}
	var cx, cy uint16
	if *click != "" {
		x, y, ok := strings.Cut(*click, ",")
		xi, err1 := strconv.ParseUint(x, 10, 16)
		yi, err2 := strconv.ParseUint(y, 10, 16)
		if !ok || err1 != nil || err2 != nil {
			return fmt.Errorf("-click %q is not x,y", *click)
		}
		cx, cy = uint16(xi), uint16(yi)
	}

	conn, err := net.DialTimeout("tcp", *target, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	si, err := rfb.ClientHandshake(conn, "")
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Time{})

	rec, err := recording.Start(recording.Config{Dir: *dir, IncludeInput: *includeInput},
		recording.Meta{Session: "recordvnc", TokenHash: "00000000", Target: "tcp:" + *target})
	if err != nil {
		return err
	}
	if err := rec.Server(recording.Handshake(recording.ServerInit(si.Width, si.Height, si.PixelFormat, si.Name))); err != nil {
		return err
	}
	var sendMu sync.Mutex
	send := func(write func(io.Writer) error) error {
		var b strings.Builder
		_ = write(&b)
		msg := []byte(b.String())
		sendMu.Lock()
		defer sendMu.Unlock()
		if _, err := conn.Write(msg); err != nil {
			return err
		}
		return rec.Input(msg)
	}
	w, h := uint16(si.Width), uint16(si.Height)
	encodings, ok := offers[*encoding]
	if !ok {
		return fmt.Errorf("-encoding %q is not raw, tight or zrle", *encoding)
	}
	pf, ok := formats[*format]
	if !ok {
		return fmt.Errorf("-pixel-format %q is not novnc or bgrx", *format)
	}
	for _, m := range []func(io.Writer) error{
		func(w io.Writer) error { return rfb.SetPixelFormat(w, pf) },
		func(w io.Writer) error { return rfb.SetEncodings(w, encodings...) },
		func(wr io.Writer) error { return rfb.RequestUpdate(wr, false, 0, 0, w, h) },
	} {
		if err := send(m); err != nil {
			return err
		}
	}

	res := result{ID: rec.ID(), Width: si.Width, Height: si.Height}
	if *encoding == "raw" {
		res.ClockGrid = &grid{X: (si.Width - clockWidth) / 2, Y: (si.Height - clockRows*clockCell) / 2, Cols: clockCols, Rows: clockRows, Cell: clockCell}
	}
	fb := rfb.NewFramebuffer(si.Width, si.Height)
	var resMu sync.Mutex
	readErr := make(chan error, 1)
	updated := func(bits string) error {
		resMu.Lock()
		res.Updates++
		if n := len(res.Clock); bits != "" && (n == 0 || res.Clock[n-1].Bits != bits) {
			res.Clock = append(res.Clock, clockChange{Ms: time.Since(rec.Started()).Milliseconds(), Bits: bits})
		}
		resMu.Unlock()
		return send(func(wr io.Writer) error { return rfb.RequestUpdate(wr, true, 0, 0, w, h) })
	}
	if *encoding == "raw" {
		go func() {
			br := bufio.NewReaderSize(io.TeeReader(conn, sink{rec}), 64<<10)
			for {
				rects, err := rfb.ReadFramebufferUpdate(br, pf)
				if err == nil {
					fb.Apply(rects)
					err = updated(clockBits(fb, res.ClockGrid))
				}
				if err != nil {
					readErr <- err
					return
				}
			}
		}()
	} else {
		go func() { readErr <- frameUpdates(conn, rec, pf, updated) }()
	}

	start := rec.Started()
	at := func(d time.Duration) <-chan time.Time { return time.After(time.Until(start.Add(d))) }
	clickC, keysC := at(*clickAt), at(*keysAt)
	if *click == "" {
		clickC = nil
	}
	if *keys == "" {
		keysC = nil
	}
	end := at(*duration)
	for done := false; !done; {
		select {
		case err := <-readErr:
			return fmt.Errorf("reading updates: %w", err)
		case <-clickC:
			clickC = nil
			err = errors.Join(
				send(func(wr io.Writer) error { return rfb.PointerEvent(wr, 0, cx, cy) }),
				send(func(wr io.Writer) error { return rfb.PointerEvent(wr, 1, cx, cy) }),
				send(func(wr io.Writer) error { return rfb.PointerEvent(wr, 0, cx, cy) }))
		case <-keysC:
			keysC = nil
			for _, k := range *keys {
				err = errors.Join(err,
					send(func(wr io.Writer) error { return rfb.KeyEvent(wr, true, uint32(k)) }),
					send(func(wr io.Writer) error { return rfb.KeyEvent(wr, false, uint32(k)) }))
			}
		case <-end:
			done = true
		}
		if err != nil {
			return err
		}
	}
	conn.Close()
	<-readErr
	if err := rec.Close("client closed"); err != nil {
		return err
	}
	resMu.Lock()
	defer resMu.Unlock()
	return json.NewEncoder(os.Stdout).Encode(res)
}

// offers are the SetEncodings of each -encoding: noVNC's own list for a
// 24-bit screen, cut to one picture encoding and to the pseudo-encodings
// that need no answer from the client (no fences, no continuous updates).
var offers = map[string][]int32{
	"raw": {rfb.EncodingRaw, rfb.EncodingDesktopSize},
	"tight": {rfb.EncodingCopyRect, rfb.EncodingTight, rfb.EncodingRaw, rfb.EncodingJPEGQuality0 + 6,
		rfb.EncodingCompressLevel0 + 2, rfb.EncodingDesktopSize, rfb.EncodingLastRect, rfb.EncodingDesktopName},
	"zrle": {rfb.EncodingCopyRect, rfb.EncodingZRLE, rfb.EncodingRaw, rfb.EncodingDesktopSize,
		rfb.EncodingLastRect, rfb.EncodingDesktopName},
}

// frameUpdates records every read from the server and frames the stream,
// calling updated at the end of each FramebufferUpdate; without a decoder
// for Tight and ZRLE, the framer is what tells where an update ends.
func frameUpdates(conn net.Conn, rec *recording.Recording, pf rfb.PixelFormat, updated func(string) error) error {
	f, err := rfbframe.NewFramer(pf)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, 64<<10)
	for {
		n, err := conn.Read(buf[len(buf):cap(buf)])
		if err != nil {
			return err
		}
		if err := rec.Server(buf[len(buf) : len(buf)+n]); err != nil {
			return err
		}
		buf = buf[:len(buf)+n]
		p := buf
		for len(p) > 0 {
			s, err := f.Next(p)
			if err != nil {
				return err
			}
			if s.Len == 0 {
				break
			}
			if s.Kind == rfbframe.FramebufferUpdate && s.End {
				if err := updated(""); err != nil {
					return err
				}
			}
			p = p[s.Len:]
		}
		buf = buf[:copy(buf, p)]
	}
}

// clockBits samples the centre of every cell of the clock's grid: 1 where
// it is teal.
func clockBits(fb *rfb.Framebuffer, g *grid) string {
	var b strings.Builder
	for row := range g.Rows {
		for col := range g.Cols {
			x, y := g.X+col*g.Cell+g.Cell/2, g.Y+row*g.Cell+g.Cell/2
			r, gr, bl := fb.At(x, y)
			if [3]uint8{r, gr, bl} == teal {
				b.WriteByte('1')
			} else {
				b.WriteByte('0')
			}
		}
	}
	return b.String()
}

// sink records every read from the server as one block, as the relay
// records every chunk it forwards.
type sink struct{ rec *recording.Recording }

func (s sink) Write(p []byte) (int, error) {
	if err := s.rec.Server(p); err != nil {
		return 0, err
	}
	return len(p), nil
}
