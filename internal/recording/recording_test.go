package recording

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/fbs"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// noVNCFormat is the SetPixelFormat noVNC 1.7 sends: 32 bpp, depth 24,
// little-endian, red in the lowest byte.
var noVNCFormat = rfb.PixelFormat{BitsPerPixel: 32, Depth: 24, TrueColour: true,
	RedMax: 255, GreenMax: 255, BlueMax: 255, RedShift: 0, GreenShift: 8, BlueShift: 16}

func setPixelFormat(pf rfb.PixelFormat) []byte {
	var b bytes.Buffer
	_ = rfb.SetPixelFormat(&b, pf)
	return b.Bytes()
}

func message(f func(w io.Writer) error) []byte {
	var b bytes.Buffer
	_ = f(&b)
	return b.Bytes()
}

// readFBS returns the blocks of an FBS file and checks that it ends at a
// block boundary.
func readFBS(t *testing.T, path string) []fbs.Block {
	t.Helper()
	blocks, err := fbs.ReadFile(path)
	if err != nil {
		t.Fatalf("%s after %d blocks: %v", path, len(blocks), err)
	}
	return blocks
}

func joined(blocks []fbs.Block) []byte {
	var b []byte
	for _, bl := range blocks {
		b = append(b, bl.Data...)
	}
	return b
}

func TestRecording(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "recordings")
	const token = "the-console-token-7f3a"
	rec, err := Start(Config{Dir: dir, IncludeInput: true}, Meta{Session: "s-1", TokenHash: "ab12cd34", Target: "tcp:127.0.0.1:5901"})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\d{8}T\d{6}Z-[0-9a-f]{24}$`).MatchString(rec.ID()) {
		t.Fatalf("id %q", rec.ID())
	}
	// While recording, the sidecar exists and says incomplete.
	s, err := ReadSidecar(dir, rec.ID())
	if err != nil {
		t.Fatal(err)
	}
	if s.Complete || s.Ended != nil {
		t.Fatalf("sidecar of a live recording: %+v", s)
	}

	var stream []byte
	server := func(p []byte) {
		t.Helper()
		stream = append(stream, p...)
		if err := rec.Server(p); err != nil {
			t.Fatal(err)
		}
	}
	input := func(p []byte) {
		t.Helper()
		if err := rec.Input(p); err != nil {
			t.Fatal(err)
		}
	}
	server(Handshake(ServerInit(800, 600, rfb.PixelFormat32, "vncdemo")))
	input(setPixelFormat(noVNCFormat))
	input(setPixelFormat(noVNCFormat)) // a repeat is not listed again
	input(message(func(w io.Writer) error { return rfb.SetEncodings(w, rfb.EncodingRaw) }))
	input(message(func(w io.Writer) error { return rfb.RequestUpdate(w, false, 0, 0, 800, 600) }))
	for i := range 50 {
		server(bytes.Repeat([]byte{byte(i)}, 1+i*97))
		if i == 20 {
			time.Sleep(30 * time.Millisecond)
			input(message(func(w io.Writer) error { return rfb.PointerEvent(w, 1, 200, 450) }))
			input(message(func(w io.Writer) error { return rfb.KeyEvent(w, true, 'a') }))
			input([]byte{rfb.MsgQEMUClient, rfb.QEMUExtendedKeyEvent, 0, 1, 0, 0, 0, 'a', 0, 0, 0, 30})
			input(message(func(w io.Writer) error { return rfb.ClientCutText(w, []byte(token)) }))
		}
	}
	if err := rec.Close("client closed"); err != nil {
		t.Fatal(err)
	}

	blocks := readFBS(t, filepath.Join(dir, rec.ID()+".fbs"))
	if !bytes.Equal(joined(blocks), stream) {
		t.Fatal("the FBS file does not hold the stream")
	}
	for i := 1; i < len(blocks); i++ {
		if blocks[i].Time < blocks[i-1].Time {
			t.Fatalf("block %d goes back in time: %d after %d", i, blocks[i].Time, blocks[i-1].Time)
		}
	}
	if last := blocks[len(blocks)-1].Time; last < 30 {
		t.Fatalf("last block at %d ms, after a 30 ms pause", last)
	}
	in := readFBS(t, filepath.Join(dir, rec.ID()+".input"))
	if len(in) != 3 || in[0].Data[0] != rfb.MsgPointerEvent || in[1].Data[0] != rfb.MsgKeyEvent || in[2].Data[0] != rfb.MsgQEMUClient {
		t.Fatalf("input blocks: %v", in)
	}

	s, err = ReadSidecar(dir, rec.ID())
	if err != nil {
		t.Fatal(err)
	}
	if !s.Complete || s.Ended == nil || s.Reason != "client closed" || s.Error != "" {
		t.Fatalf("sidecar after the end: %+v", s)
	}
	if s.Session != "s-1" || s.TokenHash != "ab12cd34" || s.Target != "tcp:127.0.0.1:5901" || !s.InputIncluded {
		t.Fatalf("sidecar facts: %+v", s)
	}
	if s.Bytes != int64(len(stream)) || s.InputBytes != 6+8+12 || s.DurationMs != blocks[len(blocks)-1].Time {
		t.Fatalf("sidecar counts: bytes %d input %d duration %d", s.Bytes, s.InputBytes, s.DurationMs)
	}
	if len(s.PixelFormats) != 1 {
		t.Fatalf("pixel formats: %+v", s.PixelFormats)
	}
	pf := s.PixelFormats[0]
	if pf.Offset != int64(len(Handshake(ServerInit(800, 600, rfb.PixelFormat32, "vncdemo")))) ||
		pf.BitsPerPixel != 32 || pf.Depth != 24 || pf.RedShift != 0 || pf.BlueShift != 16 || pf.RedMax != 255 || !pf.TrueColour || pf.BigEndian {
		t.Fatalf("pixel format: %+v", pf)
	}

	// Permissions, and no file holds the token.
	info, err := os.Stat(dir)
	if err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("directory: %v %v", info.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Fatalf("directory holds %d files, want 3", len(entries))
	}
	for _, e := range entries {
		info, _ := e.Info()
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s is %v", e.Name(), info.Mode())
		}
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		if strings.Contains(e.Name(), token) || bytes.Contains(b, []byte(token)) {
			t.Errorf("%s holds the token", e.Name())
		}
	}
	if err := rec.Server([]byte("late")); !errors.Is(err, ErrEnded) {
		t.Fatalf("Server after the end: %v", err)
	}
}

// Without IncludeInput there is no .input file, and input is not kept;
// pixel formats still are.
func TestRecordingWithoutInput(t *testing.T) {
	dir := t.TempDir()
	rec, err := Start(Config{Dir: dir}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	_ = rec.Input(message(func(w io.Writer) error { return rfb.KeyEvent(w, true, 'a') }))
	_ = rec.Input(setPixelFormat(noVNCFormat))
	_ = rec.Input(setPixelFormat(rfb.PixelFormat32))
	if err := rec.Close("done"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, rec.ID()+".input")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf(".input without IncludeInput: %v", err)
	}
	s, _ := ReadSidecar(dir, rec.ID())
	if s.InputIncluded || s.InputBytes != 0 || len(s.PixelFormats) != 2 || !s.Complete {
		t.Fatalf("sidecar: %+v", s)
	}
}

// A full queue is an error at once, reported once to OnError; nothing
// more is recorded, what was queued before is written, and the sidecar
// says incomplete.
func TestQueueFull(t *testing.T) {
	dir := t.TempDir()
	var reported atomic.Int32
	errCh := make(chan error, 4)
	rec, err := Start(Config{Dir: dir, QueueBytes: 4096, OnError: func(err error) {
		reported.Add(1)
		errCh <- err
	}}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	first := []byte("queued before the loss")
	if err := rec.Server(first); err != nil {
		t.Fatal(err)
	}
	if err := rec.Server(make([]byte, 5000)); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("an over-sized block: %v", err)
	}
	if err := rec.Server([]byte("x")); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("after the loss: %v", err)
	}
	select {
	case err := <-errCh:
		if !errors.Is(err, ErrQueueFull) {
			t.Fatalf("OnError got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnError was not called")
	}
	if err := rec.Close("client closed"); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Close: %v", err)
	}
	if reported.Load() != 1 {
		t.Fatalf("OnError called %d times", reported.Load())
	}
	if !bytes.Equal(joined(readFBS(t, filepath.Join(dir, rec.ID()+".fbs"))), first) {
		t.Fatal("what was queued before the loss is not on disk")
	}
	s, _ := ReadSidecar(dir, rec.ID())
	if s.Complete || !strings.Contains(s.Error, "queue full") || s.Ended == nil {
		t.Fatalf("sidecar: %+v", s)
	}
}

// The count of blocks is bounded too: a flood of tiny writes while the
// writer is held back hits it.
func TestQueueBlocksBound(t *testing.T) {
	rec, err := Start(Config{Dir: t.TempDir(), QueueBlocks: 3}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock() // holds the writer back at its next swap
	rec.queued, rec.blocks = 0, 3
	err = rec.admit(1)
	rec.mu.Unlock()
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("fourth block: %v", err)
	}
	rec.mu.Lock()
	rec.blocks = 0
	rec.mu.Unlock()
	_ = rec.Close("")
}

// The handshake is what a client needs to reach ServerInit with security
// None: rfb.ClientHandshake, as a player, completes it.
func TestHandshakePlaysWithoutCredentials(t *testing.T) {
	b := Handshake(ServerInit(1024, 768, rfb.PixelFormat32, "console of vm-1"))
	rw := struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(b), io.Discard}
	si, err := rfb.ClientHandshake(rw, "")
	if err != nil {
		t.Fatal(err)
	}
	if si.Width != 1024 || si.Height != 768 || si.Name != "console of vm-1" || si.Security != rfb.SecurityNone || si.PixelFormat != rfb.PixelFormat32 {
		t.Fatalf("ServerInit %+v", si)
	}
	if n, _ := rw.Reader.(*bytes.Reader); n.Len() != 0 {
		t.Fatalf("%d bytes left after ServerInit", n.Len())
	}
	if got := binary.BigEndian.Uint32(Handshake(nil)[14:]); got != 0 || len(Handshake(nil)) != 18 {
		t.Fatal("the handshake without ServerInit is 18 bytes ending in a SecurityResult OK")
	}
}

// A browser that keeps changing its pixel format: the sidecar lists the
// first ones and does not claim to be complete.
func TestTooManyPixelFormats(t *testing.T) {
	dir := t.TempDir()
	rec, err := Start(Config{Dir: dir}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxPixelFormats + 10 {
		pf := noVNCFormat
		pf.RedMax = uint16(i + 1)
		if err := rec.Input(setPixelFormat(pf)); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.Close("done"); !errors.Is(err, ErrTooManyPixelFormats) {
		t.Fatalf("Close: %v", err)
	}
	s, _ := ReadSidecar(dir, rec.ID())
	if s.Complete || len(s.PixelFormats) != maxPixelFormats || s.Error == "" {
		t.Fatalf("sidecar: complete %v, %d formats, error %q", s.Complete, len(s.PixelFormats), s.Error)
	}
}

// pending is how many bytes are queued or being written.
func (r *Recording) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queued
}

// startOnPipe starts a recording whose FBS stream goes into a pipe (without
// the file header) instead of its file, for a test to read as slowly as
// it likes; it returns the pipe's reading end.
func startOnPipe(t *testing.T, cfg Config) (*Recording, *os.File) {
	t.Helper()
	cfg.Dir = t.TempDir()
	rec, err := Start(cfg, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	rec.fbs.Close()
	rec.fbs = pw // before the first Server call, so before the writer looks
	return rec, pr
}

// A disk that stops taking data (here a pipe nobody reads) never holds up
// the relay: every Server call returns at once, and the queue's limit
// turns into ErrQueueFull.
func TestServerNeverBlocksOnAStalledDisk(t *testing.T) {
	rec, pr := startOnPipe(t, Config{QueueBytes: 1 << 20})
	chunk := make([]byte, 16<<10)
	var slowest time.Duration
	calls := 0
	for ; ; calls++ {
		if calls > 1000 {
			t.Fatal("the queue never filled")
		}
		start := time.Now()
		err := rec.Server(chunk)
		slowest = max(slowest, time.Since(start))
		if errors.Is(err, ErrQueueFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// Generous for a loaded machine: a call that waited for the writer
	// would never return at all.
	if slowest > time.Second {
		t.Fatalf("a Server call took %v", slowest)
	}
	if calls < 60 {
		t.Fatalf("the queue was full after %d calls of 16 KiB, its limit is 1 MiB", calls)
	}
	pr.Close() // the writer's blocked write now fails
	if err := rec.Close("client closed"); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Close: %v", err)
	}
}

// With QueueWait, a disk slower than the console for a while (here a pipe
// read in small sips) sets the pace instead of failing the recording; a
// disk that stops taking data fails it once a call has waited QueueWait.
func TestQueueWait(t *testing.T) {
	start := func(t *testing.T) (*Recording, *os.File) {
		return startOnPipe(t, Config{QueueBytes: 256 << 10, QueueWait: 500 * time.Millisecond})
	}
	chunk := make([]byte, 32<<10)

	t.Run("slow disk", func(t *testing.T) {
		rec, pr := start(t)
		var read int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 64<<10)
			for {
				n, err := pr.Read(buf)
				read += int64(n)
				if err != nil {
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
		// 4 MiB through a 256 KiB queue: sixteen times what it holds.
		for i := range 128 {
			if err := rec.Server(chunk); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		// A pipe cannot be synced; everything else must have worked.
		if err := rec.Close("client closed"); err != nil && !strings.Contains(err.Error(), "syncing recording") {
			t.Fatal(err)
		}
		// The recording closed the pipe's writing end: the reader gets
		// what is left, then EOF.
		<-done
		pr.Close()
		if want := int64(128 * fbs.BlockSize(len(chunk))); read != want {
			t.Fatalf("the disk got %d bytes, want %d", read, want)
		}
	})

	t.Run("stalled disk", func(t *testing.T) {
		rec, pr := start(t)
		var err error
		var last time.Duration
		for i := 0; err == nil; i++ {
			if i > 1000 {
				t.Fatal("the queue never filled")
			}
			began := time.Now()
			err = rec.Server(chunk)
			last = time.Since(began)
		}
		if !errors.Is(err, ErrQueueFull) || last < 500*time.Millisecond {
			t.Fatalf("the call that found the queue full returned %v after %v, want ErrQueueFull after QueueWait", err, last)
		}
		pr.Close()
		if err := rec.Close("client closed"); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("Close: %v", err)
		}
	})
}
