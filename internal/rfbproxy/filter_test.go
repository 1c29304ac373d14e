package rfbproxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

func be16(v uint16) []byte   { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte   { return binary.BigEndian.AppendUint32(nil, v) }
func cat(b ...[]byte) []byte { return bytes.Join(b, nil) }

func setEncodings(encs ...int32) []byte {
	b := cat([]byte{rfb.MsgSetEncodings, 0}, be16(uint16(len(encs))))
	for _, e := range encs {
		b = append(b, be32(uint32(e))...)
	}
	return b
}

// The messages of a view-only console, as noVNC and others send them.
var (
	setPixelFormat = cat([]byte{rfb.MsgSetPixelFormat, 0, 0, 0}, []byte{32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0})
	updateRequest  = []byte{rfb.MsgFramebufferUpdateRequest, 1, 0, 0, 0, 0, 3, 32, 2, 88}
	continuous     = []byte{rfb.MsgEnableContinuousUpdates, 1, 0, 0, 0, 0, 3, 32, 2, 88}
	fence          = cat([]byte{rfb.MsgClientFence, 0, 0, 0}, be32(0x80000001), []byte{3, 'a', 'b', 'c'})
	qemuAudioOn    = []byte{rfb.MsgQEMUClient, rfb.QEMUAudio, 0, 0}
	qemuAudioFmt   = cat([]byte{rfb.MsgQEMUClient, rfb.QEMUAudio, 0, 2, 3, 2}, be32(44100))

	keyEvent     = cat([]byte{rfb.MsgKeyEvent, 1, 0, 0}, be32(0x61))
	pointer      = []byte{rfb.MsgPointerEvent, 1, 0, 10, 0, 20}
	pointerExt   = []byte{rfb.MsgPointerEvent, 0x81, 0, 10, 0, 20, 1}
	cutText      = cat([]byte{rfb.MsgClientCutText, 0, 0, 0}, be32(5), []byte("hello"))
	extClipboard = cat([]byte{rfb.MsgClientCutText, 0, 0, 0}, be32(uint32(0xfffffffc)), be32(0x10000001)) // length -4
	xvpReboot    = []byte{rfb.MsgXvpClient, 0, 1, 3}
	desktopSize  = cat([]byte{rfb.MsgSetDesktopSize, 0}, be16(1024), be16(768), []byte{1, 0}, make([]byte, 16))
	gii          = cat([]byte{rfb.MsgGii, 0x80 | 1}, be16(6), make([]byte, 6))
	giiLE        = cat([]byte{rfb.MsgGii, 1}, []byte{6, 0}, make([]byte, 6))
	qemuKey      = cat([]byte{rfb.MsgQEMUClient, rfb.QEMUExtendedKeyEvent}, be16(1), be32(0x61), be32(30))
)

// noVNC 1.7's SetEncodings for a 24-bit screen.
var noVNCEncodings = []int32{7, 1, 16, 21, 5, 2, 6, 0, -26, -254, -223, -224, -258, -261, -308, -309, -312, -313, -307,
	rfb.EncodingExtendedClipboard, -316, 0x574d5664, -239}

func TestViewOnlyFilter(t *testing.T) {
	kept := setEncodings(7, 1, 16, 21, 5, 2, 6, 0, -26, -254, -223, -224, -261, -312, -313, -307, 0x574d5664, -239)
	cases := []struct {
		name    string
		in      []byte
		want    []byte
		dropped int64
	}{
		{"pictures pass", cat(setPixelFormat, updateRequest, continuous, fence, qemuAudioOn, qemuAudioFmt),
			cat(setPixelFormat, updateRequest, continuous, fence, qemuAudioOn, qemuAudioFmt), 0},
		{"noVNC's encodings lose the input features", setEncodings(noVNCEncodings...), kept, 0},
		{"no encodings", setEncodings(), setEncodings(), 0},
		{"input is dropped", cat(keyEvent, pointer, cutText, extClipboard, xvpReboot, desktopSize, gii, giiLE, qemuKey), nil, 9},
		{"input between update requests", cat(updateRequest, keyEvent, updateRequest, pointer, cutText, updateRequest),
			cat(updateRequest, updateRequest, updateRequest), 3},
		{"extended pointer after ExtendedMouseButtons was offered", cat(setEncodings(-316), pointerExt, updateRequest),
			cat(setEncodings(), updateRequest), 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Whole, then split at every byte, then one byte at a time.
			for split := 0; split <= len(c.in); split++ {
				f := ClientFilter{ViewOnly: true}
				out, err := f.Filter(nil, c.in[:split])
				if err != nil {
					t.Fatal(err)
				}
				out, err = f.Filter(out, c.in[split:])
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out, c.want) {
					t.Fatalf("split at %d: forwarded % x, want % x", split, out, c.want)
				}
				if f.Dropped != c.dropped {
					t.Fatalf("split at %d: dropped %d, want %d", split, f.Dropped, c.dropped)
				}
			}
			f := ClientFilter{ViewOnly: true}
			var out []byte
			for i := range c.in {
				var err error
				if out, err = f.Filter(out, c.in[i:i+1]); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(out, c.want) {
				t.Fatalf("byte by byte: forwarded % x, want % x", out, c.want)
			}
		})
	}
}

func TestViewOnlyFilterRefuses(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
	}{
		{"unknown type", []byte{7, 0, 0, 0}},
		{"VMware message", []byte{127, 0, 0, 0}},
		{"too many encodings", cat([]byte{rfb.MsgSetEncodings, 0}, be16(maxEncodings+1))},
		{"fence payload past 64 bytes", cat([]byte{rfb.MsgClientFence, 0, 0, 0}, be32(0), []byte{65})},
		{"clipboard past the limit", cat([]byte{rfb.MsgClientCutText, 0, 0, 0}, be32(DefaultMaxLength+1))},
		{"extended clipboard past the limit", cat([]byte{rfb.MsgClientCutText, 0, 0, 0}, be32(0x80000000))},
		{"unknown QEMU message", []byte{rfb.MsgQEMUClient, 9}},
		{"unknown QEMU audio operation", []byte{rfb.MsgQEMUClient, rfb.QEMUAudio, 0, 7}},
		{"unknown type after a good message", cat(updateRequest, []byte{200})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := ClientFilter{ViewOnly: true}
			if _, err := f.Filter(nil, c.in); !errors.Is(err, ErrRefusedMessage) {
				t.Fatalf("error %v, want ErrRefusedMessage", err)
			}
		})
	}
}

func TestViewOnlyFilterSkipsLargeClipboard(t *testing.T) {
	f := ClientFilter{ViewOnly: true, MaxLength: 8 << 20}
	text := bytes.Repeat([]byte{'x'}, 5<<20)
	in := cat([]byte{rfb.MsgClientCutText, 0, 0, 0}, be32(uint32(len(text))), text, updateRequest)
	var out []byte
	for len(in) > 0 {
		n := min(len(in), 64<<10)
		var err error
		if out, err = f.Filter(out, in[:n]); err != nil {
			t.Fatal(err)
		}
		in = in[n:]
		if cap(f.msg) > 1<<10 {
			t.Fatalf("the filter holds %d bytes of a dropped message", cap(f.msg))
		}
	}
	if !bytes.Equal(out, updateRequest) || f.Dropped != 1 {
		t.Fatalf("forwarded % x, dropped %d", out, f.Dropped)
	}
}

// FuzzViewOnlyFilter: however the browser's bytes are split, the filter
// forwards the same bytes, and what it forwards is a sequence of whole
// messages of the allowed kinds, with no input pseudo-encoding offered.
func FuzzViewOnlyFilter(f *testing.F) {
	f.Add(cat(setPixelFormat, setEncodings(noVNCEncodings...), updateRequest, keyEvent, pointer), 7)
	f.Add(cat(cutText, extClipboard, fence, xvpReboot, desktopSize, gii, giiLE, qemuKey, qemuAudioFmt), 3)
	f.Add(cat(setEncodings(-316), pointerExt, continuous), 1)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		whole := ClientFilter{ViewOnly: true}
		want, wantErr := whole.Filter(nil, in)

		parts := ClientFilter{ViewOnly: true}
		if split < 0 {
			split = -split
		}
		split %= len(in) + 1
		got, err := parts.Filter(nil, in[:split])
		if err == nil {
			got, err = parts.Filter(got, in[split:])
		}
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("whole: %v; split at %d: %v", wantErr, split, err)
		}
		if wantErr == nil && !bytes.Equal(got, want) {
			t.Fatalf("split at %d forwards % x, whole % x", split, got, want)
		}
		checkForwarded(t, want)
	})
}

// checkForwarded parses forwarded bytes as the VNC server would and fails
// on anything but allowed messages.
func checkForwarded(t *testing.T, b []byte) {
	t.Helper()
	for len(b) > 0 {
		size := 0
		switch b[0] {
		case rfb.MsgSetPixelFormat:
			size = 20
		case rfb.MsgFramebufferUpdateRequest, rfb.MsgEnableContinuousUpdates:
			size = 10
		case rfb.MsgSetEncodings:
			if len(b) < 4 {
				t.Fatalf("partial SetEncodings forwarded")
			}
			n := int(binary.BigEndian.Uint16(b[2:]))
			size = 4 + 4*n
			if len(b) < size {
				t.Fatalf("partial SetEncodings forwarded")
			}
			for i := range n {
				if e := int32(binary.BigEndian.Uint32(b[4+4*i:])); inputEncoding(e) {
					t.Fatalf("input pseudo-encoding %d forwarded", e)
				}
			}
		case rfb.MsgClientFence:
			if len(b) < 9 {
				t.Fatalf("partial ClientFence forwarded")
			}
			size = 9 + int(b[8])
		case rfb.MsgQEMUClient:
			if len(b) < 4 || b[1] != rfb.QEMUAudio {
				t.Fatalf("QEMU message % x forwarded", b[:min(len(b), 4)])
			}
			size = 4
			if binary.BigEndian.Uint16(b[2:]) == 2 {
				size = 10
			}
		default:
			t.Fatalf("message type %d forwarded", b[0])
		}
		if len(b) < size {
			t.Fatalf("partial message of type %d forwarded", b[0])
		}
		b = b[size:]
	}
}

// BenchmarkViewOnlyFilter: what a view-only console's browser sends, in
// 64 KiB reads: noVNC's update requests, and ClientFence messages (what the
// benchmark harness sends through a view-only route).
func BenchmarkViewOnlyFilter(b *testing.B) {
	for _, c := range []struct {
		name string
		msg  []byte
	}{
		{"update requests", updateRequest},
		{"fences of 64 bytes", cat([]byte{rfb.MsgClientFence, 0, 0, 0}, be32(0), []byte{64}, make([]byte, 64))},
		{"key and pointer events", cat(keyEvent, pointer)},
	} {
		b.Run(c.name, func(b *testing.B) {
			in := bytes.Repeat(c.msg, (64<<10)/len(c.msg))
			out := make([]byte, 0, len(in))
			f := ClientFilter{ViewOnly: true}
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				var err error
				if out, err = f.Filter(out[:0], in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
