package rfbproxy

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbframe"
)

// extended is an Extended Clipboard message (ClientCutText or
// ServerCutText, a negative length) with flags and payload.
func extended(msgType byte, flags uint32, payload []byte) []byte {
	return cat([]byte{msgType, 0, 0, 0}, be32(uint32(-int32(4+len(payload)))), be32(flags), payload)
}

// provide is an Extended Clipboard provide of text, deflated.
func provide(msgType byte, text []byte) []byte {
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	_ = binary.Write(zw, binary.BigEndian, uint32(len(text)+1))
	_, _ = zw.Write(append(bytes.Clone(text), 0))
	_ = zw.Close()
	return extended(msgType, rfb.ClipboardProvide|rfb.ClipboardText, z.Bytes())
}

func cut(msgType byte, text []byte) []byte {
	return cat([]byte{msgType, 0, 0, 0}, be32(uint32(len(text))), text)
}

var (
	clientCaps    = extended(rfb.MsgClientCutText, rfb.ClipboardCaps|rfb.ClipboardText|rfb.ClipboardRequest|rfb.ClipboardProvide, be32(1<<20))
	clientNotify  = extended(rfb.MsgClientCutText, rfb.ClipboardNotify|rfb.ClipboardText, nil)
	clientRequest = extended(rfb.MsgClientCutText, rfb.ClipboardRequest|rfb.ClipboardText, nil)
	clientPeek    = extended(rfb.MsgClientCutText, rfb.ClipboardPeek, nil)
)

func TestClientFilterClipboard(t *testing.T) {
	short := []byte("short")
	long := bytes.Repeat([]byte("0123456789"), 10)
	// A provide that deflates well below the limit, but inflates past it.
	bomb := bytes.Repeat([]byte{'a'}, 1<<20)
	cases := []struct {
		name    string
		policy  Clipboard
		in      []byte
		want    []byte
		dropped int64
	}{
		{"paste on passes everything", Clipboard{NoCopy: true},
			cat(cut(rfb.MsgClientCutText, short), clientCaps, clientNotify, provide(rfb.MsgClientCutText, short), keyEvent, updateRequest),
			cat(cut(rfb.MsgClientCutText, short), clientCaps, clientNotify, provide(rfb.MsgClientCutText, short), keyEvent, updateRequest), 0},
		{"paste off drops the text, notify and provide", Clipboard{NoPaste: true},
			cat(cut(rfb.MsgClientCutText, short), clientCaps, clientNotify, clientRequest, provide(rfb.MsgClientCutText, short), pointer),
			cat(clientCaps, clientRequest, pointer), 3},
		{"copy off drops the requests", Clipboard{NoCopy: true},
			cat(clientRequest, clientPeek, updateRequest), updateRequest, 2},
		{"past max_size: dropped whole", Clipboard{MaxSize: 64},
			cat(cut(rfb.MsgClientCutText, long), cut(rfb.MsgClientCutText, short), provide(rfb.MsgClientCutText, long), provide(rfb.MsgClientCutText, short)),
			cat(cut(rfb.MsgClientCutText, short), provide(rfb.MsgClientCutText, short)), 2},
		{"inflated past max_size", Clipboard{MaxSize: 64 << 10},
			cat(provide(rfb.MsgClientCutText, bomb), updateRequest), updateRequest, 1},
		{"provide that is no zlib", Clipboard{NoCopy: true},
			cat(extended(rfb.MsgClientCutText, rfb.ClipboardProvide|rfb.ClipboardText, []byte("not zlib")), updateRequest), updateRequest, 1},
		{"no action", Clipboard{NoCopy: true},
			cat(extended(rfb.MsgClientCutText, rfb.ClipboardText, nil), updateRequest), updateRequest, 1},
		{"SetEncodings loses JPEG and unknown encodings", Clipboard{NoCopy: true},
			setEncodings(noVNCEncodings...), nil, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for split := 0; split <= len(c.in); split += 1 + len(c.in)/64 {
				sf := NewServerFilter(c.policy)
				f := ClientFilter{Clipboard: c.policy, Server: sf}
				out, err := f.Filter(nil, c.in[:split])
				if err == nil {
					out, err = f.Filter(out, c.in[split:])
				}
				if err != nil {
					t.Fatal(err)
				}
				want := c.want
				if c.want == nil && c.in[0] == rfb.MsgSetEncodings {
					var offer rfbframe.Offer
					want, offer, _ = rfbframe.RewriteSetEncodings(nil, c.in)
					if !bytes.Contains(c.in, be32(uint32(rfb.EncodingJPEG))) || len(offer.Removed) == 0 || bytes.Equal(want, c.in) {
						t.Fatal("the case removes nothing")
					}
				}
				if !bytes.Equal(out, want) {
					t.Fatalf("split at %d: forwarded % x\nwant % x", split, out, want)
				}
				if got := f.ClipboardDropped.Load(); got != c.dropped {
					t.Fatalf("split at %d: dropped %d, want %d", split, got, c.dropped)
				}
			}
		})
	}
}

// TestClientFilterSkipsHugeClipboard: a 4 GiB Extended Clipboard length,
// or a long plain one, costs no memory: it is skipped as it comes.
func TestClientFilterSkipsHugeClipboard(t *testing.T) {
	f := ClientFilter{Clipboard: Clipboard{NoCopy: true, MaxSize: 1 << 10}}
	in := cat([]byte{rfb.MsgClientCutText, 0, 0, 0}, be32(0x80000001), be32(rfb.ClipboardProvide|rfb.ClipboardText))
	chunk := make([]byte, 64<<10)
	out, err := f.Filter(nil, in)
	for i := 0; err == nil && i < 64; i++ {
		out, err = f.Filter(out, chunk)
		if cap(f.msg) > 1<<10 {
			t.Fatalf("the filter holds %d bytes of a dropped message", cap(f.msg))
		}
	}
	if err != nil || len(out) != 0 || f.ClipboardDropped.Load() != 1 {
		t.Fatalf("forwarded %d bytes, %v, dropped %d", len(out), err, f.ClipboardDropped.Load())
	}
}

// TestClientFilterPixelFormat: a SetPixelFormat reaches the server's
// framer, also before ServerInit came; one it cannot follow ends the
// console.
func TestClientFilterPixelFormat(t *testing.T) {
	sf := NewServerFilter(Clipboard{NoCopy: true})
	f := ClientFilter{Clipboard: sf.policy, Server: sf}
	pf16 := rfb.PixelFormat{BitsPerPixel: 16, Depth: 16, TrueColour: true, RedMax: 31, GreenMax: 63, BlueMax: 31, RedShift: 11, GreenShift: 5}
	m := pf16.Marshal()
	msg := cat([]byte{rfb.MsgSetPixelFormat, 0, 0, 0}, m[:])
	if _, err := f.Filter(nil, msg); err != nil {
		t.Fatal(err)
	}
	// ServerInit in 32 bits, then a 1x1 Raw update in 16.
	si := rfb.PixelFormat32.Marshal()
	stream := cat(be16(1), be16(1), si[:], be32(0),
		[]byte{rfb.MsgFramebufferUpdate, 0}, be16(1), be16(0), be16(0), be16(1), be16(1), be32(0), []byte{1, 2},
		[]byte{rfb.MsgBell})
	n, used, err := sf.Filter(stream)
	if err != nil || n != len(stream) || used != len(stream) {
		t.Fatalf("framed %d of %d, passed %d: %v", used, len(stream), n, err)
	}
	bad := cat([]byte{rfb.MsgSetPixelFormat, 0, 0, 0}, []byte{24, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0})
	if _, err := f.Filter(nil, bad); !errors.Is(err, rfbframe.ErrCannotFrame) {
		t.Fatalf("24 bits per pixel: %v, want ErrCannotFrame", err)
	}
}

func serverStream(msgs ...[]byte) []byte {
	si := rfb.PixelFormat32.Marshal()
	return cat(append([][]byte{be16(4), be16(4), si[:], be32(4), []byte("fake")}, msgs...)...)
}

var (
	bell        = []byte{rfb.MsgBell}
	rawUpdate   = cat([]byte{rfb.MsgFramebufferUpdate, 0}, be16(1), be16(0), be16(0), be16(1), be16(1), be32(0), []byte{1, 2, 3, 4})
	serverCaps  = extended(rfb.MsgServerCutText, rfb.ClipboardCaps|rfb.ClipboardText|rfb.ClipboardNotify|rfb.ClipboardProvide, be32(1<<20))
	serverNote  = extended(rfb.MsgServerCutText, rfb.ClipboardNotify|rfb.ClipboardText, nil)
	serverAsk   = extended(rfb.MsgServerCutText, rfb.ClipboardRequest|rfb.ClipboardText, nil)
	jpegUpdate  = cat([]byte{rfb.MsgFramebufferUpdate, 0}, be16(1), be16(0), be16(0), be16(1), be16(1), be32(uint32(rfb.EncodingJPEG)))
	serverShort = cut(rfb.MsgServerCutText, []byte("short"))
)

// filterServer runs a stream through a server filter in reads of read
// bytes, as the console's relay does, and returns what passed.
func filterServer(t testing.TB, f *ServerFilter, stream []byte, read int) ([]byte, error) {
	var out, carry []byte
	for off := 0; off < len(stream); {
		end := min(off+read, len(stream))
		buf := cat(carry, stream[off:end])
		off = end
		p := buf
		for len(p) > 0 {
			n, used, err := f.Filter(p)
			out = append(out, p[:n]...)
			out = append(out, f.Held()...)
			if err != nil {
				return out, err
			}
			if used == 0 {
				break
			}
			p = p[used:]
		}
		if len(p) >= MaxServerCarry {
			t.Fatalf("the filter left %d bytes", len(p))
		}
		carry = bytes.Clone(p)
	}
	return out, nil
}

func TestServerFilter(t *testing.T) {
	long := bytes.Repeat([]byte("0123456789"), 10)
	cases := []struct {
		name    string
		policy  Clipboard
		in      []byte
		want    []byte
		dropped int64
	}{
		{"copy on", Clipboard{NoPaste: true},
			serverStream(serverShort, bell, serverCaps, serverNote, provide(rfb.MsgServerCutText, []byte("x")), rawUpdate),
			serverStream(serverShort, bell, serverCaps, serverNote, provide(rfb.MsgServerCutText, []byte("x")), rawUpdate), 0},
		{"copy off", Clipboard{NoCopy: true},
			serverStream(serverShort, bell, serverCaps, serverNote, serverAsk, provide(rfb.MsgServerCutText, []byte("x")), rawUpdate),
			serverStream(bell, serverCaps, serverAsk, rawUpdate), 3},
		{"paste off drops the server's requests", Clipboard{NoPaste: true},
			serverStream(serverAsk, rawUpdate), serverStream(rawUpdate), 1},
		{"past max_size", Clipboard{MaxSize: 64},
			serverStream(cut(rfb.MsgServerCutText, long), rawUpdate, provide(rfb.MsgServerCutText, long), serverShort),
			serverStream(rawUpdate, serverShort), 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, read := range []int{1, 3, 7, 64, 1 << 20} {
				f := NewServerFilter(c.policy)
				out, err := filterServer(t, f, c.in, read)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out, c.want) {
					t.Fatalf("reads of %d: passed % x\nwant % x", read, out, c.want)
				}
				if got := f.Dropped.Load(); got != c.dropped {
					t.Fatalf("reads of %d: dropped %d, want %d", read, got, c.dropped)
				}
			}
		})
	}
	t.Run("JPEG cannot be framed", func(t *testing.T) {
		f := NewServerFilter(Clipboard{NoCopy: true})
		out, err := filterServer(t, f, serverStream(bell, jpegUpdate, bell), 1<<20)
		if !errors.Is(err, rfbframe.ErrCannotFrame) || !bytes.Contains([]byte(err.Error()), []byte("JPEG")) {
			t.Fatalf("error %v, want one naming JPEG", err)
		}
		if !bytes.Equal(out, serverStream(bell)) {
			t.Fatalf("passed % x", out)
		}
	})
}

// FuzzClientFilter: however the client's bytes are split, the clipboard
// filter forwards the same bytes, or fails the same way; it never panics
// and never holds more than its bounds.
func FuzzClientFilter(f *testing.F) {
	f.Add(cat(setPixelFormat, setEncodings(noVNCEncodings...), updateRequest, keyEvent, pointer, cut(rfb.MsgClientCutText, []byte("hi"))), 7, uint8(0))
	f.Add(cat(clientCaps, clientNotify, provide(rfb.MsgClientCutText, []byte("pasted")), clientRequest, clientPeek), 13, uint8(1))
	f.Add(cat(setEncodings(-316), pointerExt, continuous, desktopSize, gii, qemuKey, qemuAudioFmt), 3, uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, split int, mode uint8) {
		policy := Clipboard{NoCopy: mode&1 != 0, NoPaste: mode&2 != 0, MaxSize: int64(mode>>2) * 16}
		newFilter := func() *ClientFilter {
			return &ClientFilter{Clipboard: policy, Server: NewServerFilter(policy), ViewOnly: mode&0x80 != 0}
		}
		whole := newFilter()
		want, wantErr := whole.Filter(nil, in)

		parts := newFilter()
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
		if bound := 4 + 4*maxEncodings + 12 + int(holdBound(policy.Max())); cap(parts.msg) > max(bound, 64<<10) {
			t.Fatalf("the filter holds %d bytes", cap(parts.msg))
		}
	})
}

// FuzzServerFilter: however the server's bytes are read, the filter
// passes the same bytes, or fails the same way; it never panics.
func FuzzServerFilter(f *testing.F) {
	f.Add(serverStream(serverShort, bell, serverCaps, serverNote, provide(rfb.MsgServerCutText, []byte("x")), rawUpdate), 5, uint8(1))
	f.Add(serverStream(serverAsk, rawUpdate, jpegUpdate), 1, uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, read int, mode uint8) {
		policy := Clipboard{NoCopy: mode&1 != 0, NoPaste: mode&2 != 0, MaxSize: int64(mode>>2) * 16}
		read = 1 + int(uint(read)%uint(len(in)+1))
		want, wantErr := filterServer(t, NewServerFilter(policy), in, len(in)+1)
		got, err := filterServer(t, NewServerFilter(policy), in, read)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("whole: %v; reads of %d: %v", wantErr, read, err)
		}
		if wantErr == nil && !bytes.Equal(got, want) {
			t.Fatalf("reads of %d pass % x, whole % x", read, got, want)
		}
	})
}
