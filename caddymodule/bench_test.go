package caddymodule

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
	"github.com/vncgate/caddy-vnc-proxy/internal/spice"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
)

// The relay benchmarks run the handler in this process behind an
// httptest.Server, with the file resolver, internal/loadtarget as the VNC
// server and gorilla/websocket as the browser. Allocations reported per op
// include the client's and the target's, which are the same in every run;
// bench/ (make bench) measures Caddy as a separate process instead.

const benchToken = "bench-token-0123456789abcdef"

// benchProxy provisions a vnc_proxy handler with a token file pointing at
// a loadtarget server and serves it; it returns the WebSocket URL.
func benchProxy(b *testing.B) string {
	b.Helper()
	return benchProxyWith(b, nil)
}

// benchProxyWith is benchProxy with the handler's options set by
// configure before it is provisioned.
func benchProxyWith(b *testing.B, configure func(*Handler)) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	target := &loadtarget.Server{}
	go target.Serve(l)
	b.Cleanup(func() { target.Close() })
	return benchProxyTo(b, l.Addr().String(), "", configure)
}

// benchProxyTo is benchProxy for a target of its own, with the handler's
// protocol ("" for vnc), and its options set by configure.
func benchProxyTo(b *testing.B, target, protocol string, configure ...func(*Handler)) string {
	b.Helper()

	dir := b.TempDir()
	tokens := filepath.Join(dir, "tokens")
	var lines strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&lines, "other-%d: 127.0.0.1:1\n", i)
	}
	fmt.Fprintf(&lines, "%s: %s\n", benchToken, target)
	if err := os.WriteFile(tokens, []byte(lines.String()), 0o600); err != nil {
		b.Fatal(err)
	}

	// A config whose logs go nowhere, so that modules provisioned in its
	// context do not write into the benchmark's output.
	if err := caddy.Load([]byte(`{"admin": {"disabled": true}, "logging": {"logs": {"default": {"writer": {"output": "discard"}}}}}`), true); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = caddy.Stop() })
	raw, _ := json.Marshal(map[string]string{"source": "file", "path": tokens})
	h := &Handler{ConsoleOptions: ConsoleOptions{ResolverRaw: raw}, Protocol: protocol}
	for _, c := range configure {
		if c != nil {
			c(h)
		}
	}
	ctx, cancel := caddy.NewContext(caddy.ActiveContext())
	b.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h.ServeHTTP(w, r, nil); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}))
	b.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/websockify?token=" + benchToken
}

var benchDialer = websocket.Dialer{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}

// benchSession opens a session, reads the RFB greeting and sends cmd.
func benchSession(b *testing.B, url string, cmd []byte) *websocket.Conn {
	b.Helper()
	ws, _, err := benchDialer.Dial(url, nil)
	if err != nil {
		b.Fatal(err)
	}
	_, greeting, err := ws.ReadMessage()
	if err != nil || string(greeting) != loadtarget.Greeting {
		b.Fatalf("greeting %q, %v", greeting, err)
	}
	if cmd != nil {
		if err := ws.WriteMessage(websocket.BinaryMessage, cmd); err != nil {
			b.Fatal(err)
		}
	}
	return ws
}

func sizedCmd(c byte, n int64) []byte {
	p := make([]byte, 9)
	p[0] = c
	binary.BigEndian.PutUint64(p[1:], uint64(n))
	return p
}

// BenchmarkRelayToBrowser: the VNC server sends 64 KiB per op; the browser
// receives it in whatever messages the relay makes.
func BenchmarkRelayToBrowser(b *testing.B) {
	url := benchProxy(b)
	const chunk = 64 << 10
	b.SetBytes(chunk)
	b.ReportAllocs()
	ws := benchSession(b, url, nil)
	defer ws.Close()
	n := int64(b.N) * chunk
	b.ResetTimer()
	if err := ws.WriteMessage(websocket.BinaryMessage, sizedCmd('s', n)); err != nil {
		b.Fatal(err)
	}
	msgs := readBytes(b, ws, n)
	b.StopTimer()
	b.ReportMetric(float64(msgs)/float64(b.N), "msgs/op")
}

// readBytes reads n bytes of binary messages from ws and returns in how
// many messages they came.
func readBytes(b *testing.B, ws *websocket.Conn, n int64) (msgs int64) {
	var got int64
	for got < n {
		_, r, err := ws.NextReader()
		if err != nil {
			b.Fatalf("after %d of %d bytes: %v", got, n, err)
		}
		k, err := io.Copy(io.Discard, r)
		if err != nil {
			b.Fatal(err)
		}
		got += k
		msgs++
	}
	return msgs
}

// BenchmarkRelayToTarget: the browser sends one 64 KiB message per op; the
// VNC server checks what arrives against the stream.
func BenchmarkRelayToTarget(b *testing.B) {
	url := benchProxy(b)
	const chunk = 64 << 10
	b.SetBytes(chunk)
	b.ReportAllocs()
	ws := benchSession(b, url, nil)
	defer ws.Close()
	// The stream repeats every 2 MiB: a whole period, sent a chunk at a time.
	period := make([]byte, 2<<20)
	loadtarget.Stream(period, 0)
	b.ResetTimer()
	if err := ws.WriteMessage(websocket.BinaryMessage, sizedCmd('v', int64(b.N)*chunk)); err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		off := i * chunk % len(period)
		if err := ws.WriteMessage(websocket.BinaryMessage, period[off:off+chunk]); err != nil {
			b.Fatal(err)
		}
	}
	var matched [8]byte
	_, r, err := ws.NextReader()
	if err == nil {
		_, err = io.ReadFull(r, matched[:])
	}
	if err != nil {
		b.Fatalf("reading the target's answer: %v", err)
	}
	if m := binary.BigEndian.Uint64(matched[:]); m != uint64(b.N)*chunk {
		b.Fatalf("the target received a corrupted stream near offset %d", m)
	}
}

// BenchmarkRelayEcho: one 16-byte message to the VNC server and back per op.
func BenchmarkRelayEcho(b *testing.B) {
	url := benchProxy(b)
	b.ReportAllocs()
	ws := benchSession(b, url, []byte{'e'})
	defer ws.Close()
	msg := []byte("0123456789abcdef")
	buf := make([]byte, len(msg))
	b.ResetTimer()
	for range b.N {
		if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < len(msg); {
			_, r, err := ws.NextReader()
			if err != nil {
				b.Fatal(err)
			}
			k, err := io.ReadFull(r, buf[got:])
			if err != nil && err != io.ErrUnexpectedEOF {
				b.Fatal(err)
			}
			got += k
		}
	}
}

// BenchmarkSessionOpen: per op a WebSocket upgrade, a token lookup, a dial
// of the VNC server and its greeting relayed, then a close; in parallel.
func BenchmarkSessionOpen(b *testing.B) {
	url := benchProxy(b)
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ws, _, err := d.Dial(url, nil)
			if err != nil {
				b.Error(err)
				return
			}
			_, greeting, err := ws.ReadMessage()
			ws.Close()
			if err != nil || string(greeting) != loadtarget.Greeting {
				b.Errorf("greeting %q, %v", greeting, err)
				return
			}
		}
	})
}

// BenchmarkSPICEConsoleOpen: a SPICE console as spice-html5 opens it, one
// op: the main channel (a token lookup, MAIN_INIT's session id), then
// display, inputs and cursor joining it by that id, each its own
// WebSocket and link, against the SPICE stand-in; then the main channel
// closes, which ends the others.
func BenchmarkSPICEConsoleOpen(b *testing.B) {
	standIn, err := spice.NewStandIn()
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go standIn.Serve(l)
	b.Cleanup(func() { standIn.Close() })
	url := benchProxyTo(b, l.Addr().String(), "spice")
	b.ReportAllocs()
	link := func(typ spice.ChannelType, id uint32) (*websocket.Conn, *spice.Channel) {
		ws, _, err := benchDialer.Dial(url, nil)
		if err != nil {
			b.Fatal(err)
		}
		ch, err := spice.LinkChannel(wsstream.New(ws), typ, id, "", false)
		if err != nil {
			b.Fatalf("%s channel: %v", typ, err)
		}
		return ws, ch
	}
	for b.Loop() {
		mainWS, main := link(spice.ChannelMain, 0)
		var others []*websocket.Conn
		for _, typ := range []spice.ChannelType{spice.ChannelDisplay, spice.ChannelInputs, spice.ChannelCursor} {
			ws, _ := link(typ, main.SessionID)
			others = append(others, ws)
		}
		mainWS.Close()
		for _, ws := range others {
			ws.Close()
		}
	}
}
