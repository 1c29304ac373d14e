package console

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
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
			Metrics: Metrics{
				BytesToBrowser: prometheus.NewCounter(prometheus.CounterOpts{Name: "b"}),
				BytesToTarget:  prometheus.NewCounter(prometheus.CounterOpts{Name: "t"}),
				Active:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "a"}),
				Duration:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "d"}),
			},
			Target:  tokenresolver.Target{Network: "tcp", Address: l.Addr().String()},
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
