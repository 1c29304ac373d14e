package loadtarget

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbframe"
)

// framedConn logs in to a Framed server and checks its ServerInit.
func framedConn(t *testing.T) net.Conn {
	t.Helper()
	s := &Server{Password: "pw", Framed: true}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	si, err := rfb.ClientHandshake(c, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if si.Width != FramedWidth || si.Height != FramedHeight || si.PixelFormat != rfb.PixelFormat32 {
		t.Fatalf("ServerInit %+v", si)
	}
	return c
}

// framed reads everything the server sends until it closes, checking that
// the framer a proxy uses frames it as whole messages.
func framed(t *testing.T, c net.Conn) []byte {
	t.Helper()
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	f, err := rfbframe.NewFramer(rfb.PixelFormat32)
	if err != nil {
		t.Fatal(err)
	}
	for p := raw; len(p) > 0; {
		s, err := f.Next(p)
		if err != nil {
			t.Fatal(err)
		}
		if s.Len == 0 {
			t.Fatalf("%d bytes of a message cut short", len(p))
		}
		if s.Kind != rfbframe.FramebufferUpdate && s.Kind != rfbframe.ServerFence {
			t.Fatalf("a %s message", s.Kind)
		}
		p = p[s.Len:]
	}
	if !f.AtBoundary() {
		t.Fatal("the stream ends inside a message")
	}
	return raw
}

// TestFramedSend: 's' arrives as Raw pixels and fences that the framer
// frames and FramedReader reads back as the stream, whatever the length.
func TestFramedSend(t *testing.T) {
	for _, n := range []int64{0, 3, 4, 4097, 3<<20 + 5} {
		c := framedConn(t)
		if _, err := c.Write(AppendFences(nil, binary.BigEndian.AppendUint64([]byte{'s'}, uint64(n)))); err != nil {
			t.Fatal(err)
		}
		raw := framed(t, c)
		got, err := io.ReadAll(&FramedReader{R: bytes.NewReader(raw)})
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, n)
		Stream(want, 0)
		if !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: read back %d bytes that differ", n, len(got))
		}
	}
}

// TestFramedEchoVerify: 'e' echoes in ServerFences; 'v' answers in one.
func TestFramedEchoVerify(t *testing.T) {
	c := framedConn(t)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 10)
	if _, err := c.Write(AppendFences(nil, append([]byte{'e'}, msg...))); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(&FramedReader{R: bufio.NewReader(c)}, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, %v", got, err)
	}

	c = framedConn(t)
	const n = 100000
	data := make([]byte, n)
	Stream(data, 0)
	if _, err := c.Write(AppendFences(nil, append(binary.BigEndian.AppendUint64([]byte{'v'}, n), data...))); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(&FramedReader{R: bytes.NewReader(framed(t, c))})
	if err != nil || len(got) != 8 || binary.BigEndian.Uint64(got) != n {
		t.Fatalf("answer % x, %v", got, err)
	}
}
