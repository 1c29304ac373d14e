package recording

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// browserStream is every message type a browser may send, as bytes, and
// the messages Client must find in it.
func browserStream() (stream []byte, kept [][]byte) {
	add := func(keep bool, msg []byte) {
		stream = append(stream, msg...)
		if keep {
			kept = append(kept, msg)
		}
	}
	add(true, setPixelFormat(noVNCFormat))
	add(false, message(func(w io.Writer) error {
		return rfb.SetEncodings(w, rfb.EncodingTight, rfb.EncodingRaw, rfb.EncodingExtendedMouseButtons, rfb.EncodingDesktopSize)
	}))
	add(false, message(func(w io.Writer) error { return rfb.RequestUpdate(w, true, 0, 0, 800, 600) }))
	add(true, message(func(w io.Writer) error { return rfb.KeyEvent(w, true, 'q') }))
	add(true, []byte{rfb.MsgPointerEvent, 0x81, 0, 10, 0, 20, 0x01}) // extended mouse buttons: 7 bytes
	add(true, message(func(w io.Writer) error { return rfb.PointerEvent(w, 1, 200, 450) }))
	add(false, message(func(w io.Writer) error { return rfb.ClientCutText(w, []byte("pasted secret text")) }))
	ext := []byte{rfb.MsgClientCutText, 0, 0, 0, 0xff, 0xff, 0xff, 0xf8, 0, 0, 0, 1, 'a', 'b', 'c', 'd'} // length -8
	add(false, ext)
	add(false, []byte{rfb.MsgClientFence, 0, 0, 0, 0, 0, 0, 3, 2, 'x', 'y'})
	add(false, append([]byte{rfb.MsgSetDesktopSize, 0, 3, 32, 2, 88, 2, 0}, make([]byte, 32)...))
	add(false, []byte{rfb.MsgGii, 0x81, 0, 3, 1, 2, 3}) // big-endian length 3
	add(false, []byte{rfb.MsgGii, 0x01, 2, 0, 9, 9})    // little-endian length 2
	add(true, []byte{rfb.MsgQEMUClient, rfb.QEMUExtendedKeyEvent, 0, 1, 0, 0, 0, 'q', 0, 0, 0, 16})
	add(false, []byte{rfb.MsgQEMUClient, rfb.QEMUAudio, 0, 2, 1, 2, 0, 0, 0xac, 0x44})
	add(false, []byte{rfb.MsgQEMUClient, rfb.QEMUAudio, 0, 0})
	add(false, []byte{rfb.MsgXvpClient, 0, 1, 2})
	add(false, []byte{rfb.MsgEnableContinuousUpdates, 1, 0, 0, 0, 0, 3, 32, 2, 88})
	add(true, message(func(w io.Writer) error { return rfb.KeyEvent(w, false, 'q') }))
	return stream, kept
}

func frameAll(stream []byte, split func(rest int) int) ([][]byte, error) {
	var c clientFramer
	var got [][]byte
	for len(stream) > 0 {
		n := min(split(len(stream)), len(stream))
		if err := c.feed(stream[:n], func(m []byte) { got = append(got, bytes.Clone(m)) }); err != nil {
			return got, err
		}
		stream = stream[n:]
	}
	return got, nil
}

// However the stream is cut, the same messages are found, whole.
func TestClientFramer(t *testing.T) {
	stream, kept := browserStream()
	rng := rand.New(rand.NewPCG(7, 8))
	splits := map[string]func(int) int{
		"whole":  func(n int) int { return n },
		"bytes":  func(int) int { return 1 },
		"threes": func(int) int { return 3 },
		"random": func(int) int { return 1 + rng.IntN(17) },
	}
	for name, split := range splits {
		got, err := frameAll(stream, split)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(kept) {
			t.Fatalf("%s: found\n%v\nwant\n%v", name, got, kept)
		}
	}
}

// Through Client, the messages land in the sidecar and the input file; a
// message that cannot be framed leaves the recording incomplete.
func TestClient(t *testing.T) {
	dir := t.TempDir()
	rec, err := Start(Config{Dir: dir, IncludeInput: true}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	stream, kept := browserStream()
	for len(stream) > 0 {
		n := min(5, len(stream))
		if err := rec.Client(stream[:n]); err != nil {
			t.Fatal(err)
		}
		stream = stream[n:]
	}
	if err := rec.Client([]byte{99, 1, 2, 3}); err != nil {
		t.Fatalf("an unknown message is not the relay's error: %v", err)
	}
	if err := rec.Server([]byte("the screen is still recorded")); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close("done"); !errors.Is(err, ErrClientStream) {
		t.Fatalf("Close: %v", err)
	}
	in := readFBS(t, filepath.Join(dir, rec.ID()+".input"))
	if len(in) != len(kept)-1 { // all but SetPixelFormat
		t.Fatalf("%d input blocks, want %d", len(in), len(kept)-1)
	}
	s, _ := ReadSidecar(dir, rec.ID())
	if s.Complete || len(s.PixelFormats) != 1 || s.Bytes == 0 {
		t.Fatalf("sidecar: %+v", s)
	}
	b, _ := os.ReadFile(filepath.Join(dir, rec.ID()+".input"))
	if bytes.Contains(b, []byte("secret")) {
		t.Fatal("clipboard text in the input file")
	}
}

// FuzzClientFramer: whatever the browser sends, cut anywhere, the framer
// never panics, finds the same messages as when fed whole, and each is a
// whole message of a kept type.
func FuzzClientFramer(f *testing.F) {
	stream, _ := browserStream()
	f.Add(stream, uint8(1))
	f.Add(stream, uint8(7))
	f.Add([]byte{rfb.MsgClientCutText, 0, 0, 0, 0x80, 0, 0, 0}, uint8(3))
	f.Add([]byte{rfb.MsgQEMUClient, 9}, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		whole, wholeErr := frameAll(data, func(n int) int { return n })
		step := int(cut%32) + 1
		parts, partsErr := frameAll(data, func(int) int { return step })
		if fmt.Sprint(whole) != fmt.Sprint(parts) || (wholeErr == nil) != (partsErr == nil) {
			t.Fatalf("whole: %v %v; in parts of %d: %v %v", whole, wholeErr, step, parts, partsErr)
		}
		for _, m := range whole {
			size := map[byte]int{rfb.MsgSetPixelFormat: 20, rfb.MsgKeyEvent: 8, rfb.MsgPointerEvent: len(m), rfb.MsgQEMUClient: 12}[m[0]]
			if size == 0 || len(m) != size || (m[0] == rfb.MsgPointerEvent && len(m) != 6 && len(m) != 7) {
				t.Fatalf("found %v", m)
			}
		}
		if wholeErr != nil && !errors.Is(wholeErr, ErrClientStream) {
			t.Fatalf("error %v", wholeErr)
		}
	})
}
