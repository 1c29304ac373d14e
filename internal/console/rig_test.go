package console_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsconnect"
)

// How a test's browser reaches the console.
const (
	overWS  = "ws"  // HTTP/1.1 upgrade on plain TCP, answered by the server: the splice relay
	overWSS = "wss" // HTTP/1.1 upgrade over TLS, answered by gorilla: the copying relay
	overH2  = "h2"  // extended CONNECT over HTTP/2: a console.Stream
)

// greeting is what the tests' VNC servers send first.
const greeting = "RFB 003.008\n"

// wait bounds every wait for an event; generous, since the tests share a
// loaded machine.
const wait = 15 * time.Second

// rigOptions say how a rig's consoles are made.
type rigOptions struct {
	transport string
	// target is the VNC server's host:port.
	target string
	// prepare runs on the VNC server's connection before the upgrade, as
	// the admission pipeline does: it returns the greeting it read (for
	// the browser to get first) and the login, for an RFB-aware console.
	prepare func(net.Conn) ([]byte, *rfb.Result, error)
	// hideSocket hands the session the VNC server's connection without
	// its socket, as a TLS connection to it would be.
	hideSocket bool
	// config adjusts each console's Config.
	config func(*console.Config)
	// beforeStart runs between New and Start.
	beforeStart func(*websocket.Conn)
	// clientReadBuffer, when set, shrinks the browser's TCP receive
	// buffer (ws and wss), so that one that stops reading stalls soon.
	clientReadBuffer int
}

// rig is a console endpoint on a plain net/http server, made the way a
// door makes one: the handler dials the VNC server, answers the upgrade,
// and hands both connections to console.New and Start.
type rig struct {
	t       *testing.T
	opts    rigOptions
	srv     *httptest.Server
	tlsConf *tls.Config
	h2      *wsconnect.H2
	logs    *observer.ObservedLogs
	metrics *testMetrics
	// started gets every session once it runs.
	started chan *console.Session
	// startErrs gets Start's errors.
	startErrs chan error

	mu       sync.Mutex
	releases map[string]int
	released chan string
}

func newRig(t *testing.T, opts rigOptions) *rig {
	t.Helper()
	// Registered first, so that it runs last, after the servers closed.
	t.Cleanup(func() { checkNothingLeft(t) })
	core, logs := observer.New(zapcore.DebugLevel)
	r := &rig{
		t:         t,
		opts:      opts,
		logs:      logs,
		metrics:   newTestMetrics(),
		started:   make(chan *console.Session, 64),
		startErrs: make(chan error, 64),
		releases:  make(map[string]int),
		released:  make(chan string, 64),
	}
	logger := zap.New(core)
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.serve(w, req, logger)
	}))
	switch opts.transport {
	case overWS:
		r.srv.Start()
	case overWSS:
		r.srv.StartTLS()
	case overH2:
		r.srv.EnableHTTP2 = true
		r.srv.StartTLS()
	default:
		t.Fatalf("unknown transport %q", opts.transport)
	}
	if opts.transport != overWS {
		roots := x509.NewCertPool()
		roots.AddCert(r.srv.Certificate())
		r.tlsConf = &tls.Config{RootCAs: roots}
	}
	if opts.transport == overH2 {
		r.h2 = wsconnect.NewH2(r.tlsConf)
	}
	t.Cleanup(func() {
		if r.h2 != nil {
			r.h2.Transport.CloseIdleConnections()
		}
		r.srv.Close()
		// Every session that ran was released, once.
		r.mu.Lock()
		defer r.mu.Unlock()
		for id, n := range r.releases {
			if n != 1 {
				t.Errorf("session %s: Release ran %d times, want once", id, n)
			}
		}
		if failed := logs.FilterMessage("session failed").Len(); failed > 0 {
			t.Errorf("%d sessions panicked (session failed)", failed)
		}
	})
	return r
}

var upgrader = websocket.Upgrader{WriteBufferPool: console.WriteBufferPool}

func (r *rig) serve(w http.ResponseWriter, req *http.Request, logger *zap.Logger) {
	target, err := net.DialTimeout("tcp", r.opts.target, wait)
	if err != nil {
		http.Error(w, "VNC server unavailable", http.StatusBadGateway)
		return
	}
	var greeting []byte
	var login *rfb.Result
	if r.opts.prepare != nil {
		_ = target.SetDeadline(time.Now().Add(wait))
		greeting, login, err = r.opts.prepare(target)
		_ = target.SetDeadline(time.Time{})
		if err != nil {
			target.Close()
			r.t.Errorf("preparing the VNC server's connection: %v", err)
			http.Error(w, "VNC server unusable", http.StatusBadGateway)
			return
		}
	}
	var conn net.Conn = target
	if r.opts.hideSocket {
		conn = socketless{target}
	}
	var id string
	cfg := console.Config{
		Logger:           logger,
		PingInterval:     5 * time.Second,
		MaxMessageSize:   1 << 20,
		HandshakeTimeout: wait,
		Metrics:          r.metrics.metrics(),
		Target:           "tcp:" + r.opts.target,
		Client:           req.RemoteAddr,
		TokenHash:        "0123456789ab",
		Server:           "srv0",
		Login:            login,
		Release:          func() { r.release(id) },
	}
	if r.opts.config != nil {
		r.opts.config(&cfg)
	}

	if req.ProtoMajor == 2 {
		r.serveStream(w, req, conn, greeting, cfg, &id)
		return
	}
	h := hijacker{ResponseWriter: w}
	if r.opts.transport == overWS {
		hdr := w.Header()
		hdr.Set("Upgrade", "websocket")
		hdr.Set("Connection", "Upgrade")
		hdr.Set("Sec-WebSocket-Accept", acceptKey(req.Header.Get("Sec-WebSocket-Key")))
		// The 101 goes out through the server's writer, as a door does
		// for its access log; the browser connection drops gorilla's.
		// Over wss gorilla answers itself.
		w.WriteHeader(http.StatusSwitchingProtocols)
		h.answered = true
	}
	ws, err := upgrader.Upgrade(h, req, nil)
	if err != nil {
		conn.Close()
		r.t.Errorf("upgrade: %v", err)
		return
	}
	s := console.New(ws, conn, cfg)
	id = s.ID()
	if r.opts.beforeStart != nil {
		r.opts.beforeStart(ws)
	}
	if err := s.Start(greeting); err != nil {
		r.startErrs <- err
		return
	}
	r.started <- s
}

// serveStream serves an extended CONNECT: the stream is the browser's
// connection, and the handler waits in Serve while the session runs.
func (r *rig) serveStream(w http.ResponseWriter, req *http.Request, conn net.Conn, greeting []byte, cfg console.Config, id *string) {
	if req.Method != http.MethodConnect || !strings.EqualFold(req.Header.Get(":protocol"), "websocket") {
		conn.Close()
		http.Error(w, "not a WebSocket", http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusOK)
	local, _ := req.Context().Value(http.LocalAddrContextKey).(net.Addr)
	sc := console.NewStream(req.Body, w, http.NewResponseController(w), http.NewResponseController(w), local, console.Addr(req.RemoteAddr))
	if sc.RemoteAddr().String() != req.RemoteAddr || sc.LocalAddr() == nil || sc.RemoteAddr().Network() != "tcp" {
		r.t.Errorf("stream addresses %v, %v; request from %s", sc.LocalAddr(), sc.RemoteAddr(), req.RemoteAddr)
	}
	if _, err := sc.Write(nil); err != nil {
		conn.Close()
		return
	}
	h1 := &http.Request{
		Method: http.MethodGet,
		Header: http.Header{
			"Connection":            {"Upgrade"},
			"Upgrade":               {"websocket"},
			"Sec-Websocket-Version": {"13"},
			"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
		},
	}
	ws, err := upgrader.Upgrade(streamHijacker{w, sc}, h1, nil)
	if err != nil {
		conn.Close()
		sc.Close()
		r.t.Errorf("upgrade: %v", err)
		return
	}
	s := console.New(ws, conn, cfg)
	*id = s.ID()
	if r.opts.beforeStart != nil {
		r.opts.beforeStart(ws)
	}
	if err := s.Start(greeting); err != nil {
		r.startErrs <- err
		return
	}
	r.started <- s
	sc.Serve()
}

func (r *rig) release(id string) {
	r.mu.Lock()
	r.releases[id]++
	r.mu.Unlock()
	r.released <- id
}

// releases reports how often id's Release ran.
func (r *rig) releaseCount(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.releases[id]
}

// open opens a console and returns the browser's WebSocket and the
// session.
func (r *rig) open() (*websocket.Conn, *console.Session) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var ws *websocket.Conn
	var err error
	switch r.opts.transport {
	case overH2:
		ws, _, err = r.h2.Dial(ctx, r.srv.URL+"/", nil)
	default:
		d := websocket.Dialer{TLSClientConfig: r.tlsConf, HandshakeTimeout: wait}
		if n := r.opts.clientReadBuffer; n > 0 {
			d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err == nil {
					_ = c.(*net.TCPConn).SetReadBuffer(n)
				}
				return c, err
			}
		}
		ws, _, err = d.DialContext(ctx, "ws"+strings.TrimPrefix(r.srv.URL, "http")+"/", nil)
	}
	if err != nil {
		r.t.Fatalf("opening a console: %v", err)
	}
	r.t.Cleanup(func() { ws.Close() })
	select {
	case s := <-r.started:
		return ws, s
	case err := <-r.startErrs:
		r.t.Fatalf("Start: %v", err)
		return nil, nil
	case <-time.After(wait):
		r.t.Fatal("the session did not start")
		return nil, nil
	}
}

// waitReleased waits for the Release of session id.
func (r *rig) waitReleased(id string) {
	r.t.Helper()
	waitFor(r.t, "the session's Release", func() bool { return r.releaseCount(id) > 0 })
}

// endReason waits for session id's "session ended" line and returns its
// reason.
func (r *rig) endReason(id string) string {
	r.t.Helper()
	var reason string
	waitFor(r.t, "the session's end to be logged", func() bool {
		for _, e := range r.logs.FilterMessage("session ended").All() {
			if m := e.ContextMap(); m["session"] == id {
				reason, _ = m["reason"].(string)
				return true
			}
		}
		return false
	})
	return reason
}

// endLine waits for session id's "session ended" line and returns its
// fields.
func (r *rig) endLine(id string) map[string]any {
	r.t.Helper()
	var fields map[string]any
	waitFor(r.t, "the session's end to be logged", func() bool {
		for _, e := range r.logs.FilterMessage("session ended").All() {
			if m := e.ContextMap(); m["session"] == id {
				fields = m
				return true
			}
		}
		return false
	})
	return fields
}

func acceptKey(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// hijacker hands gorilla the hijacked connection as a browser connection;
// answered: the server has sent the 101 already.
type hijacker struct {
	http.ResponseWriter
	answered bool
}

func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if h.answered {
		return console.NewAnsweredBrowserConn(c, nil), brw, nil
	}
	return console.NewBrowserConn(c), brw, nil
}

// streamHijacker hands gorilla a stream as if it were a hijacked
// connection.
type streamHijacker struct {
	http.ResponseWriter
	sc *console.Stream
}

func (h streamHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	rw := bufio.NewReadWriter(bufio.NewReaderSize(h.sc, 16), bufio.NewWriterSize(io.Discard, 16))
	return h.sc.BrowserConn(), rw, nil
}

// socketless is a connection whose socket is out of reach.
type socketless struct{ net.Conn }

// testMetrics are collectors that remember what they were given.
type testMetrics struct {
	toBrowser, toTarget *countingCounter
	active              *countingGauge
	durations           *countingObserver
}

func newTestMetrics() *testMetrics {
	return &testMetrics{
		toBrowser: &countingCounter{Counter: prometheus.NewCounter(prometheus.CounterOpts{Name: "b"})},
		toTarget:  &countingCounter{Counter: prometheus.NewCounter(prometheus.CounterOpts{Name: "t"})},
		active:    &countingGauge{Gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "a"})},
		durations: &countingObserver{},
	}
}

func (m *testMetrics) metrics() *console.Metrics {
	return &console.Metrics{BytesToBrowser: m.toBrowser, BytesToTarget: m.toTarget, Active: m.active, Duration: m.durations}
}

type countingCounter struct {
	prometheus.Counter
	n atomic.Int64
}

func (c *countingCounter) Add(v float64) { c.n.Add(int64(v)); c.Counter.Add(v) }
func (c *countingCounter) Inc()          { c.Add(1) }

type countingGauge struct {
	prometheus.Gauge
	n atomic.Int64
}

func (g *countingGauge) Inc() { g.n.Add(1); g.Gauge.Inc() }
func (g *countingGauge) Dec() { g.n.Add(-1); g.Gauge.Dec() }

type countingObserver struct{ n atomic.Int64 }

func (o *countingObserver) Observe(float64) { o.n.Add(1) }

// startTarget runs a plain TCP server standing in for a VNC server: each
// connection goes to handle, with a channel closed when the test ends;
// connections are closed then, and handle must return.
func startTarget(t *testing.T, handle func(c net.Conn, done <-chan struct{})) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c, done)
			})
		}
	})
	t.Cleanup(func() {
		close(done)
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// quietTarget greets and then reads and discards until the connection
// ends: a VNC server with nothing to say.
func quietTarget(t *testing.T) string {
	return startTarget(t, func(c net.Conn, _ <-chan struct{}) {
		if _, err := io.WriteString(c, greeting); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
	})
}

// echoTarget greets and echoes what it reads.
func echoTarget(t *testing.T) string {
	return startTarget(t, func(c net.Conn, _ <-chan struct{}) {
		if _, err := io.WriteString(c, greeting); err != nil {
			return
		}
		_, _ = io.Copy(c, c)
	})
}

// readGreeting reads the VNC server's greeting, as the admission pipeline
// does for a transparent console.
func readGreeting(c net.Conn) ([]byte, *rfb.Result, error) {
	g := make([]byte, len(greeting))
	if _, err := io.ReadFull(c, g); err != nil {
		return nil, nil, err
	}
	return g, nil, nil
}

// waitFor waits, at most wait, until cond holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// closeOf reads from ws until it fails, closes it, and returns the close
// frame it got (nil when the connection ended without one) and the error. The
// read is bounded by wait: a stream connection has no read deadline, so
// the connection is closed on timeout.
func closeOf(t testing.TB, ws *websocket.Conn) (*websocket.CloseError, error) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(wait))
	ended := make(chan error, 1)
	go func() {
		for {
			_, r, err := ws.NextReader()
			if err == nil {
				_, err = io.Copy(io.Discard, r)
			}
			if err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		// As a browser does once the close handshake is done: the
		// proxy's lingering close need not wait for it.
		ws.Close()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce, err
		}
		return nil, err
	case <-time.After(wait + time.Second):
		ws.Close()
		<-ended
		// Error, not Fatal: closeOf runs on goroutines of its own too.
		t.Error("the console did not end")
		return nil, errors.New("the console did not end")
	}
}

// expectClose reads until the close frame and checks its code (and its
// text, unless text is "*").
func expectClose(t testing.TB, ws *websocket.Conn, code int, text string) {
	t.Helper()
	ce, err := closeOf(t, ws)
	if ce == nil {
		t.Fatalf("the console ended with %v, want close %d", err, code)
	}
	if ce.Code != code || (text != "*" && ce.Text != text) {
		t.Fatalf("close %d %q, want %d %q", ce.Code, ce.Text, code, text)
	}
}

// checkNothingLeft waits until no session is registered and no goroutine
// of the engine is left, and fails the test with their stacks otherwise.
func checkNothingLeft(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(wait)
	buf := make([]byte, 8<<20)
	for {
		stacks := string(buf[:runtime.Stack(buf, true)])
		var left []string
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "/internal/console.") {
				left = append(left, g)
			}
		}
		n := console.Sessions.Len()
		if len(left) == 0 && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions registered and %d goroutines of the engine left:\n%s", n, len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
