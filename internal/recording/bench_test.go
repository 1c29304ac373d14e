package recording

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/fbs"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/vncdemo"
)

// BenchmarkServer is the cost the relay pays per chunk it records: the
// enqueue path only, with the writer writing to /dev/null so the disk is
// not what is measured.
func BenchmarkServer(b *testing.B) {
	for _, size := range []int{64, 1 << 10, 16 << 10} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			rec, err := Start(Config{Dir: b.TempDir(), QueueBytes: 256 << 20, QueueBlocks: 1 << 20}, Meta{})
			if err != nil {
				b.Fatal(err)
			}
			devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			rec.fbs.Close()
			rec.fbs = devNull // before the first Server call, so before the writer looks
			p := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := rec.Server(p); err != nil {
					b.Fatal(err)
				}
				// Only the enqueue path is measured: let a starved writer
				// (a loaded machine) catch up outside the timer.
				if i%1024 == 0 {
					b.StopTimer()
					for rec.pending() > 64<<20 {
						time.Sleep(time.Millisecond)
					}
					b.StartTimer()
				}
			}
			b.StopTimer()
			_ = rec.Close("") // syncing /dev/null fails; the figures are taken
		})
	}
}

// benchSeconds is how long each vncdemo console is recorded; the figures
// are scaled to a minute.
func benchSeconds() time.Duration {
	if s, err := strconv.Atoi(os.Getenv("RECORDING_BENCH_SECONDS")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 10 * time.Second
}

// BenchmarkVncdemoConsole records a real vncdemo console (Raw encoding,
// 800x600, noVNC's pixel format) for benchSeconds and reports what an
// operator sizes a disk by: the first full frame once, then the file's
// growth per minute from there: idle is the clock and the moving bar only; busy adds
// ten key presses and ten clicks a second, with input recorded.
//
//	go test -run '^$' -bench VncdemoConsole -benchtime 1x ./internal/recording/
func BenchmarkVncdemoConsole(b *testing.B) {
	for _, busy := range []bool{false, true} {
		name := "idle"
		if busy {
			name = "busy"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				dir := b.TempDir()
				dur := benchSeconds()
				rec, first := recordVncdemo(b, dir, dur, busy)
				size := func(ext string) int64 {
					info, err := os.Stat(filepath.Join(dir, rec.ID()+ext))
					if err != nil {
						return 0
					}
					return info.Size()
				}
				perMinute := func(n int64, d time.Duration) float64 { return float64(n) * float64(time.Minute) / float64(d) }
				b.ReportMetric(float64(first.fileBytes), "first-frame-bytes")
				b.ReportMetric(perMinute(size(".fbs")-first.fileBytes, dur), "fbs-bytes/min")
				b.ReportMetric(perMinute(size(".input"), dur), "input-bytes/min")
				b.ReportMetric(float64(size(".json")), "sidecar-bytes")
			}
		})
	}
}

// firstFrame is where a recording stood once the first full frame was in.
type firstFrame struct {
	fileBytes int64 // the FBS file's size then
}

// recordVncdemo runs an in-process vncdemo server and a client that
// behaves as noVNC does (its pixel format, Raw, an incremental update
// request after each update) for dur, recording what the client receives
// as the proxy would: the handshake, then every read from the server.
func recordVncdemo(tb testing.TB, dir string, dur time.Duration, busy bool) (*Recording, firstFrame) {
	tb.Helper()
	srv := &vncdemo.Server{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	si, err := rfb.ClientHandshake(conn, "")
	if err != nil {
		tb.Fatal(err)
	}
	rec, err := Start(Config{Dir: dir, IncludeInput: busy}, Meta{Session: "bench", Target: l.Addr().String()})
	if err != nil {
		tb.Fatal(err)
	}
	if err := rec.Server(Handshake(ServerInit(si.Width, si.Height, si.PixelFormat, si.Name))); err != nil {
		tb.Fatal(err)
	}
	send := func(msg []byte) {
		if _, err := conn.Write(msg); err != nil {
			return
		}
		if err := rec.Input(msg); err != nil {
			tb.Error(err)
		}
	}
	send(message(func(w io.Writer) error { return rfb.SetPixelFormat(w, noVNCFormat) }))
	send(message(func(w io.Writer) error { return rfb.SetEncodings(w, rfb.EncodingRaw, rfb.EncodingDesktopSize) }))
	send(message(func(w io.Writer) error { return rfb.RequestUpdate(w, false, 0, 0, uint16(si.Width), uint16(si.Height)) }))

	readErr := make(chan error, 1)
	firstC := make(chan firstFrame, 1)
	go func() {
		br := bufio.NewReaderSize(io.TeeReader(conn, serverSink{rec}), 64<<10)
		for n := 0; ; n++ {
			if _, err := rfb.ReadFramebufferUpdate(br, noVNCFormat); err != nil {
				readErr <- err
				return
			}
			if n == 0 {
				rec.mu.Lock()
				stream := rec.side.Bytes
				rec.mu.Unlock()
				// The file then, near enough: its header and those bytes
				// (the framing of the few blocks so far is left out).
				firstC <- firstFrame{fileBytes: int64(len(fbs.Header)) + stream}
			}
			send(message(func(w io.Writer) error {
				return rfb.RequestUpdate(w, true, 0, 0, uint16(si.Width), uint16(si.Height))
			}))
		}
	}()

	// The duration runs from the first full frame, which a loaded machine
	// (or the race detector) may take a while to send and read.
	var first firstFrame
	select {
	case first = <-firstC:
	case err := <-readErr:
		tb.Fatalf("reading the first frame: %v", err)
	case <-time.After(time.Minute):
		tb.Fatal("no full frame within a minute")
	}
	end := time.After(dur)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	rng := rand.New(rand.NewPCG(1, 2))
loop:
	for {
		select {
		case <-end:
			break loop
		case err := <-readErr:
			tb.Fatalf("reading updates: %v", err)
		case <-tick.C:
			if !busy {
				continue
			}
			x, y := uint16(40+rng.IntN(si.Width-80)), uint16(40+rng.IntN(si.Height-80))
			send(message(func(w io.Writer) error { return rfb.PointerEvent(w, 1, x, y) }))
			send(message(func(w io.Writer) error { return rfb.PointerEvent(w, 0, x, y) }))
			k := uint32('A' + rng.IntN(26))
			send(message(func(w io.Writer) error { return rfb.KeyEvent(w, true, k) }))
			send(message(func(w io.Writer) error { return rfb.KeyEvent(w, false, k) }))
		}
	}
	conn.Close()
	<-readErr
	if err := rec.Close("client closed"); err != nil {
		tb.Fatal(err)
	}
	return rec, first
}

// serverSink records every read from the server as one block, as the
// relay does with every chunk it forwards.
type serverSink struct{ rec *Recording }

func (s serverSink) Write(p []byte) (int, error) {
	if err := s.rec.Server(p); err != nil && !errors.Is(err, ErrEnded) {
		return 0, fmt.Errorf("recording: %w", err)
	}
	return len(p), nil
}

// A short real console, for the unit tests: what vncdemo sent plays back
// as the same updates.
func TestRecordVncdemo(t *testing.T) {
	dir := t.TempDir()
	rec, _ := recordVncdemo(t, dir, 1500*time.Millisecond, true)
	s, err := ReadSidecar(dir, rec.ID())
	if err != nil {
		t.Fatal(err)
	}
	if !s.Complete || s.Bytes < 800*600*4 || len(s.PixelFormats) != 1 || s.InputBytes == 0 {
		t.Fatalf("sidecar: %+v", s)
	}
	// The recording replays through an RFB client: handshake without
	// credentials, then a full frame in noVNC's format.
	blocks := readFBS(t, filepath.Join(dir, rec.ID()+".fbs"))
	stream := joined(blocks)
	r := &replay{data: stream}
	si, err := rfb.ClientHandshake(r, "")
	if err != nil {
		t.Fatal(err)
	}
	fb := rfb.NewFramebuffer(si.Width, si.Height)
	n := 0
	for {
		rects, err := rfb.ReadFramebufferUpdate(r, noVNCFormat)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("update %d: %v", n, err)
		}
		fb.Apply(rects)
		n++
	}
	if red, g, b := fb.At(5, 5); red != 255 || g != 0 || b != 0 {
		t.Fatalf("top-left corner is %d,%d,%d after %d updates, want red", red, g, b, n)
	}
	if red, g, b := fb.At(64, 16); red != 255 || g != 255 || b != 0 {
		t.Fatalf("key indicator is %d,%d,%d, want yellow", red, g, b)
	}
}

// replay reads a recorded stream and discards what a client writes.
type replay struct{ data []byte }

func (r *replay) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func (r *replay) Write(p []byte) (int, error) { return len(p), nil }
