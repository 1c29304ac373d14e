package spice

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestStandIn: the stand-in links a session's channels as the parsers
// (and so a proxy) expect of spice-server, then echoes.
func TestStandIn(t *testing.T) {
	s, err := NewStandIn()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { s.Close() })

	var session uint32
	for _, typ := range []ChannelType{ChannelMain, ChannelDisplay, ChannelInputs, ChannelCursor} {
		c := dialWatched(t, ln.Addr().String())
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		ch, err := LinkChannel(c, typ, session, "", false)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if typ == ChannelMain {
			session = ch.SessionID
		}
		if typ == ChannelDisplay {
			if typ, _, err := ch.ReadMessage(); err != nil || typ != MsgDisplayMark {
				t.Fatalf("display: message %d, %v", typ, err)
			}
		}
		if c.clientErr != nil || c.serverErr != nil || !c.server.Done() || !c.client.Passthrough() {
			t.Fatalf("%s: parsers %v %v done %v passthrough %v", typ, c.clientErr, c.serverErr, c.server.Done(), c.client.Passthrough())
		}
		if _, err := c.Write([]byte("echo")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, []byte("echo")) {
			t.Fatalf("%s: echo %q, %v", typ, got, err)
		}
		c.Close()
	}
	if session == 0 {
		t.Fatal("no session id")
	}
}
