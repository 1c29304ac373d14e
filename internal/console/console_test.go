package console

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
)

// hijacker hands gorilla the hijacked connection as a browser connection.
type hijacker struct{ http.ResponseWriter }

func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return NewBrowserConn(c), brw, nil
}

// TestSessionWithoutCaddy runs a console on a plain net/http server: the
// engine needs nothing of Caddy. Bytes go both ways, the VNC server's end
// is the browser's close 1000, and Release runs once.
func TestSessionWithoutCaddy(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	load := &loadtarget.Server{}
	go func() { _ = load.Serve(l) }()
	defer load.Close()

	released := make(chan struct{}, 2)
	upgrader := websocket.Upgrader{WriteBufferPool: WriteBufferPool}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			http.Error(w, "VNC server unavailable", http.StatusBadGateway)
			return
		}
		ws, err := upgrader.Upgrade(hijacker{w}, r, nil)
		if err != nil {
			target.Close()
			return
		}
		s := New(ws, target, Config{
			Logger:         zap.NewNop(),
			PingInterval:   time.Second,
			MaxMessageSize: 1 << 20,
			Metrics: &Metrics{
				BytesToBrowser: prometheus.NewCounter(prometheus.CounterOpts{Name: "b"}),
				BytesToTarget:  prometheus.NewCounter(prometheus.CounterOpts{Name: "t"}),
				Active:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "a"}),
				Duration:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "d"}),
			},
			Target:  "tcp:" + l.Addr().String(),
			Release: func() { released <- struct{}{} },
		})
		if err := s.Start(nil); err != nil {
			t.Error(err)
		}
	}))
	defer srv.Close()

	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	stream := wsstream.New(ws)
	greeting := make([]byte, len(loadtarget.Greeting))
	if _, err := io.ReadFull(stream, greeting); err != nil || string(greeting) != loadtarget.Greeting {
		t.Fatalf("greeting %q, %v", greeting, err)
	}
	if _, err := stream.Write([]byte{'e'}); err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("console "), 10000)
	if _, err := stream.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(stream, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %v", err)
	}
	if Sessions.Len() != 1 {
		t.Fatalf("%d sessions registered, want 1", Sessions.Len())
	}
	load.Close() // the VNC server goes away
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("ended with %v, want close 1000", err)
			}
			break
		}
	}
	ws.Close()
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("Release did not run")
	}
	if Sessions.Len() != 0 {
		t.Fatalf("%d sessions left", Sessions.Len())
	}
}

// FuzzBrowserFrames sends whatever bytes the fuzzer makes as the
// browser's frames, after a real upgrade, to a session in front of a VNC
// server that echoes: the session never panics, and it ends, closing the
// connection, once the browser has sent everything and half-closed.
func FuzzBrowserFrames(f *testing.F) {
	mask := []byte{1, 2, 3, 4}
	frame := func(op byte, payload []byte) []byte {
		b := []byte{0x80 | op, 0x80 | byte(len(payload))}
		b = append(b, mask...)
		for i, c := range payload {
			b = append(b, c^mask[i%4])
		}
		return b
	}
	f.Add(frame(2, []byte("e hello")))
	f.Add(append(frame(9, []byte("ping")), frame(8, []byte{3, 232})...))
	f.Add([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4})
	f.Add([]byte{0x02, 0x81, 1, 2, 3, 4, 5, 0x80, 0x81, 1, 2, 3, 4, 5})
	f.Add(frame(1, []byte("text")))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	load := &loadtarget.Server{}
	go func() { _ = load.Serve(l) }()
	f.Cleanup(func() { load.Close() })
	logs := &panicLog{}
	logger := zap.New(logs)
	upgrader := websocket.Upgrader{WriteBufferPool: WriteBufferPool}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return
		}
		ws, err := upgrader.Upgrade(hijacker{w}, r, nil)
		if err != nil {
			target.Close()
			return
		}
		_ = New(ws, target, Config{
			Logger: logger, PingInterval: time.Second, MaxMessageSize: 4096,
			Metrics: &Metrics{
				BytesToBrowser: prometheus.NewCounter(prometheus.CounterOpts{Name: "b"}),
				BytesToTarget:  prometheus.NewCounter(prometheus.CounterOpts{Name: "t"}),
				Active:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "a"}),
				Duration:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "d"}),
			},
		}).Start(nil)
	}))
	f.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")

	f.Fuzz(func(t *testing.T, input []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+addr+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v", err)
		}
		_, _ = c.Write(input)
		_ = c.(*net.TCPConn).CloseWrite()
		// The session ends: the proxy closes the connection.
		if _, err := io.Copy(io.Discard, br); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the session did not end 10s after the browser half-closed")
			}
		}
		if logs.panicked() {
			t.Fatal("a pump panicked (session failed)")
		}
	})
}

// panicLog is a zap core that notes "session failed", the line of a
// pump's panic.
type panicLog struct {
	mu     sync.Mutex
	failed bool
}

func (p *panicLog) Enabled(zapcore.Level) bool        { return true }
func (p *panicLog) With([]zapcore.Field) zapcore.Core { return p }
func (p *panicLog) Sync() error                       { return nil }
func (p *panicLog) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(e, p)
}

func (p *panicLog) Write(e zapcore.Entry, _ []zapcore.Field) error {
	if e.Message == "session failed" {
		p.mu.Lock()
		p.failed = true
		p.mu.Unlock()
	}
	return nil
}

func (p *panicLog) panicked() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}
