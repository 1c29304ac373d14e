package rfb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// scriptedServer plays the server side of a handshake over a pipe: it sends
// the byte strings of send and checks that the client wrote expect between
// them.
type step struct {
	send   []byte
	expect []byte
}

func runScript(t *testing.T, script []step) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	t.Cleanup(func() { client.Close(); <-done })
	client.SetDeadline(time.Now().Add(5 * time.Second))
	server.SetDeadline(time.Now().Add(5 * time.Second))
	go func() {
		defer close(done)
		defer server.Close()
		for _, s := range script {
			if len(s.send) > 0 {
				if _, err := server.Write(s.send); err != nil {
					t.Errorf("script write: %v", err)
					return
				}
			}
			if len(s.expect) > 0 {
				got := make([]byte, len(s.expect))
				if _, err := io.ReadFull(server, got); err != nil {
					t.Errorf("script read: %v", err)
					return
				}
				if !bytes.Equal(got, s.expect) {
					t.Errorf("client sent %q, want %q", got, s.expect)
					return
				}
			}
		}
	}()
	return client
}

func serverInit(w, h uint16, name string) []byte {
	b := binary.BigEndian.AppendUint16(nil, w)
	b = binary.BigEndian.AppendUint16(b, h)
	pf := PixelFormat32.Marshal()
	b = append(b, pf[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(name)))
	return append(b, name...)
}

func TestClientHandshakeOldServers(t *testing.T) {
	challenge := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	resp := VNCAuthResponse("pw", challenge)
	tests := []struct {
		name     string
		password string
		script   []step
		minor    int
		sec      uint8
	}{
		{"3.3 None", "", []step{
			{send: []byte("RFB 003.003\n"), expect: []byte("RFB 003.003\n")},
			{send: []byte{0, 0, 0, 1}, expect: []byte{1}},
			{send: serverInit(640, 480, "old")},
		}, 3, SecurityNone},
		{"3.3 VNC auth", "pw", []step{
			{send: []byte("RFB 003.003\n"), expect: []byte("RFB 003.003\n")},
			{send: append([]byte{0, 0, 0, 2}, challenge[:]...), expect: resp[:]},
			{send: []byte{0, 0, 0, 0}, expect: []byte{1}},
			{send: serverInit(640, 480, "old")},
		}, 3, SecurityVNCAuth},
		{"3.7 None", "", []step{
			{send: []byte("RFB 003.007\n"), expect: []byte("RFB 003.007\n")},
			{send: []byte{2, 2, 1}, expect: []byte{1, 1}}, // None, then ClientInit
			{send: serverInit(640, 480, "old")},
		}, 7, SecurityNone},
		{"3.889 is answered with 3.8", "pw", []step{
			{send: []byte("RFB 003.889\n"), expect: []byte("RFB 003.008\n")},
			{send: []byte{2, 1, 2}, expect: []byte{2}},
			{send: challenge[:], expect: resp[:]},
			{send: []byte{0, 0, 0, 0}, expect: []byte{1}},
			{send: serverInit(640, 480, "old")},
		}, 8, SecurityVNCAuth},
		{"3.5 is treated as 3.3", "", []step{
			{send: []byte("RFB 003.005\n"), expect: []byte("RFB 003.003\n")},
			{send: []byte{0, 0, 0, 1}, expect: []byte{1}},
			{send: serverInit(640, 480, "old")},
		}, 3, SecurityNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			si, err := ClientHandshake(runScript(t, tt.script), tt.password)
			if err != nil {
				t.Fatal(err)
			}
			if si.Width != 640 || si.Height != 480 || si.Name != "old" || si.Minor != tt.minor || si.Security != tt.sec || si.PixelFormat != PixelFormat32 {
				t.Fatalf("ServerInit %+v", si)
			}
		})
	}
}

func TestClientHandshakeRefusals(t *testing.T) {
	reason := func(s string) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...) }
	c := runScript(t, []step{
		{send: []byte("RFB 003.008\n"), expect: []byte("RFB 003.008\n")},
		{send: append([]byte{0}, reason("too many clients")...)},
	})
	if _, err := ClientHandshake(c, ""); err == nil || !bytes.Contains([]byte(err.Error()), []byte("too many clients")) {
		t.Errorf("refusal: %v", err)
	}
	c = runScript(t, []step{
		{send: []byte("RFB 003.008\n"), expect: []byte("RFB 003.008\n")},
		{send: []byte{1, 16}}, // only a type this client does not speak
	})
	if _, err := ClientHandshake(c, ""); err == nil {
		t.Error("unsupported security type accepted")
	}
	var challenge [16]byte
	resp := VNCAuthResponse("wrong", challenge)
	c = runScript(t, []step{
		{send: []byte("RFB 003.007\n"), expect: []byte("RFB 003.007\n")},
		{send: []byte{1, 2}, expect: []byte{2}},
		{send: challenge[:], expect: resp[:]},
		{send: []byte{0, 0, 0, 1}}, // failed, and no reason before 3.8
	})
	if _, err := ClientHandshake(c, "wrong"); !errors.Is(err, ErrAuthFailed) {
		t.Errorf("3.7 failed authentication: %v", err)
	}
	if _, err := ClientHandshake(runScript(t, []step{{send: []byte("SSH-2.0-Open")}}), ""); !errors.Is(err, ErrNotRFB) {
		t.Errorf("non-RFB greeting: %v", err)
	}
}

// The test client reads with Login's bounds: a reason longer than
// MaxReasonLen is not read.
func TestClientHandshakeReasonBound(t *testing.T) {
	for _, n := range []uint32{MaxReasonLen + 1, 64 << 10, 0xffffffff} {
		c := runScript(t, []step{
			{send: []byte("RFB 003.008\n"), expect: []byte("RFB 003.008\n")},
			{send: binary.BigEndian.AppendUint32([]byte{0}, n)},
		})
		_, err := ClientHandshake(c, "")
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not read") {
			t.Errorf("refusal with a reason of %d bytes: %v, want ErrRefused with the reason not read", n, err)
		}
	}
}

func TestReadFramebufferUpdate(t *testing.T) {
	var b bytes.Buffer
	b.Write([]byte{MsgBell})
	b.Write([]byte{MsgSetColourMapEntries, 0, 0, 0, 0, 2})
	b.Write(make([]byte, 12))
	b.Write(binary.BigEndian.AppendUint32([]byte{MsgServerCutText, 0, 0, 0}, 5))
	b.WriteString("hello")
	b.Write([]byte{MsgFramebufferUpdate, 0, 0, 2})
	// A 2x1 Raw rectangle at (3,4): red, then blue, in PixelFormat32.
	b.Write([]byte{0, 3, 0, 4, 0, 2, 0, 1, 0, 0, 0, 0})
	b.Write([]byte{0, 0, 255, 0, 255, 0, 0, 0})
	// DesktopSize to 10x8.
	b.Write([]byte{0, 0, 0, 0, 0, 10, 0, 8, 0xff, 0xff, 0xff, 0x21})

	rects, err := ReadFramebufferUpdate(&b, PixelFormat32)
	if err != nil {
		t.Fatal(err)
	}
	if len(rects) != 2 || rects[0].Encoding != EncodingRaw || rects[1].Encoding != EncodingDesktopSize {
		t.Fatalf("rects %+v", rects)
	}
	if r, g, bl := rects[0].At(3, 4); r != 255 || g != 0 || bl != 0 {
		t.Errorf("(3,4) = %d,%d,%d, want red", r, g, bl)
	}
	if r, g, bl := rects[0].At(4, 4); r != 0 || g != 0 || bl != 255 {
		t.Errorf("(4,4) = %d,%d,%d, want blue", r, g, bl)
	}
	fb := NewFramebuffer(4, 4)
	fb.Apply(rects[:1]) // clipped: (3,4) lies below a 4x4 framebuffer
	fb.Apply(rects[1:])
	if fb.Width != 10 || fb.Height != 8 {
		t.Errorf("framebuffer %dx%d after DesktopSize", fb.Width, fb.Height)
	}

	b.Reset()
	b.Write([]byte{MsgFramebufferUpdate, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 16}) // ZRLE
	if _, err := ReadFramebufferUpdate(&b, PixelFormat32); !errors.Is(err, ErrUnsupported) {
		t.Errorf("ZRLE: %v, want ErrUnsupported", err)
	}
}
