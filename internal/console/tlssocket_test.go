package console

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	mrand "math/rand/v2"
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
	"go.uber.org/zap/zaptest/observer"

	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
)

var testCertificate = sync.OnceValues(func() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, err
})

// tlsPair returns the two ends of a loopback TLS connection, handshake
// done, and the server's socket.
func tlsPair(t *testing.T) (client, server *tls.Conn, sock net.Conn) {
	t.Helper()
	cert, err := testCertificate()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sock = <-accepted
	if sock == nil {
		t.Fatal("accept failed")
	}
	client = tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	server = tls.Server(sock, &tls.Config{Certificates: []tls.Certificate{cert}})
	t.Cleanup(func() { c.Close(); sock.Close() })
	errc := make(chan error, 1)
	go func() { errc <- client.Handshake() }()
	if err := server.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return client, server, sock
}

// TestUnderTLS: a browser's TLS connection gets a tlsSocket under it. If
// it fails, crypto/tls keeps its socket otherwise now (see underTLS), and
// wss consoles write a TLS record per write(2) again.
func TestUnderTLS(t *testing.T) {
	_, server, sock := tlsPair(t)
	bc := newBrowserConn(server)
	if bc.tls == nil {
		t.Fatal("no tlsSocket under the browser's TLS connection")
	}
	if server.NetConn() != net.Conn(bc.tls) || bc.tls.Conn != sock || bc.socket() != sock {
		t.Fatalf("NetConn() = %T, socket() = %T: not the tlsSocket and the socket under it", server.NetConn(), bc.socket())
	}
	if bc.sock != net.Conn(server) || bc.Conn != net.Conn(server) {
		t.Fatal("the browserConn does not read and write the TLS connection")
	}
}

// countingConn counts the writes to a socket.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// TestTLSFrameOneWrite: a data frame's TLS records go out in one write,
// however many there are, and arrive whole; a frame bigger than the
// gathering buffer takes a few; control frames go out as they are written.
func TestTLSFrameOneWrite(t *testing.T) {
	client, server, sock := tlsPair(t)
	bc := newBrowserConn(server)
	counter := &countingConn{Conn: sock}
	bc.tls.Conn = counter

	for _, size := range []int{1, 20 << 10, bigRelayBufferSize, 3 * gatherSize} {
		frame := make([]byte, size)
		for i := range frame {
			frame[i] = byte(i * 13)
		}
		before := counter.count()
		errc := make(chan error, 1)
		go func() {
			bc.mu.Lock()
			defer bc.mu.Unlock()
			errc <- bc.writeFrame(frame)
		}()
		got := make([]byte, size)
		if _, err := io.ReadFull(client, got); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, frame) {
			t.Fatalf("a %d-byte frame arrived changed", size)
		}
		writes := counter.count() - before
		if want := 1 + size/gatherSize; writes > want {
			t.Errorf("a %d-byte frame (%d TLS records) took %d writes, want %d", size, (size+16<<10-1)/(16<<10), writes, want)
		}
		if bc.tls.out != nil {
			t.Error("a tlsSocket holds its buffer after the frame")
		}
	}

	before := counter.count()
	ping := []byte{0x89, 0}
	go bc.Write(ping)
	got := make([]byte, len(ping))
	if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, ping) {
		t.Fatalf("ping frame %x, %v", got, err)
	}
	if n := counter.count() - before; n != 1 {
		t.Errorf("a control frame took %d writes, want 1", n)
	}
}

// TestTLSFrameCutShort: a frame whose write fails (here a deadline, with a
// browser that reads nothing) fails everything written after it, through
// crypto/tls too: nothing may follow records cut short.
func TestTLSFrameCutShort(t *testing.T) {
	_, server, _ := tlsPair(t)
	bc := newBrowserConn(server)
	if err := bc.tls.Conn.(*net.TCPConn).SetWriteBuffer(4096); err != nil {
		t.Fatal(err)
	}
	_ = server.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	frame := make([]byte, bigRelayBufferSize)
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		bc.mu.Lock()
		err = bc.writeFrame(frame)
		bc.mu.Unlock()
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("writing to a browser that reads nothing: %v, want a timeout", err)
	}
	_ = server.SetWriteDeadline(time.Time{})
	if _, err := server.Write([]byte("more")); err == nil {
		t.Fatal("a write after a frame cut short succeeded")
	}
	if bc.tls.out != nil {
		t.Error("a tlsSocket holds its buffer after a failed frame")
	}
}

// consoleServer serves consoles to the loadtarget at targetAddr, over
// HTTPS (wss) when secure, with the sessions' log lines in logs.
func consoleServer(t *testing.T, secure bool, targetAddr string, pingInterval time.Duration) (wsURL string, logs *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	logger := zap.New(core)
	upgrader := websocket.Upgrader{WriteBufferPool: WriteBufferPool}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target, err := net.Dial("tcp", targetAddr)
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
			Logger:         logger,
			PingInterval:   pingInterval,
			MaxMessageSize: 1 << 20,
			Metrics: &Metrics{
				BytesToBrowser: prometheus.NewCounter(prometheus.CounterOpts{Name: "b"}),
				BytesToTarget:  prometheus.NewCounter(prometheus.CounterOpts{Name: "t"}),
				Active:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "a"}),
				Duration:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "d"}),
			},
		})
		if err := s.Start(nil); err != nil {
			t.Error(err)
		}
	}))
	if secure {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	if secure {
		return "wss" + strings.TrimPrefix(srv.URL, "https"), logs
	}
	return "ws" + strings.TrimPrefix(srv.URL, "http"), logs
}

func startLoadTarget(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	load := &loadtarget.Server{}
	go func() { _ = load.Serve(l) }()
	t.Cleanup(func() { load.Close() })
	return l.Addr().String()
}

var wssDialer = &websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, HandshakeTimeout: 10 * time.Second}

// openLoad opens a console at url and gives the loadtarget behind it cmd
// with n.
func openLoad(t *testing.T, d *websocket.Dialer, url string, cmd byte, n int64) *wsstream.Stream {
	t.Helper()
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	stream := wsstream.New(ws)
	greeting := make([]byte, len(loadtarget.Greeting))
	if _, err := io.ReadFull(stream, greeting); err != nil || string(greeting) != loadtarget.Greeting {
		t.Fatalf("greeting %q, %v", greeting, err)
	}
	if _, err := stream.Write(binary.BigEndian.AppendUint64([]byte{cmd}, uint64(n))); err != nil {
		t.Fatal(err)
	}
	return stream
}

// TestSessionOverTLS moves 32 MiB each way through a wss console and
// checks every byte; the VNC server's end reaches the browser as close
// 1000 after the last byte.
func TestSessionOverTLS(t *testing.T) {
	const size = 32 << 20
	url, logs := consoleServer(t, true, startLoadTarget(t), time.Second)

	t.Run("to browser", func(t *testing.T) {
		stream := openLoad(t, wssDialer, url, 's', size)
		want := make([]byte, 64<<10)
		got := make([]byte, 64<<10)
		for off := int64(0); off < size; {
			n := min(int64(len(got)), size-off)
			if _, err := io.ReadFull(stream, got[:n]); err != nil {
				t.Fatalf("at byte %d: %v", off, err)
			}
			loadtarget.Stream(want[:n], off)
			if !bytes.Equal(got[:n], want[:n]) {
				t.Fatalf("bytes %d..%d differ from what the target sent", off, off+n)
			}
			off += n
		}
		if _, _, err := stream.Conn.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
			t.Fatalf("after the stream: %v, want close 1000", err)
		}
	})

	t.Run("to target", func(t *testing.T) {
		stream := openLoad(t, wssDialer, url, 'v', size)
		// Messages of odd sizes, so that frames, records and reads never
		// line up.
		rng := mrand.New(mrand.NewPCG(1, 2))
		msg := make([]byte, 96<<10)
		for sent := 0; sent < size; {
			k := min(1+rng.IntN(len(msg)), size-sent)
			loadtarget.Stream(msg[:k], int64(sent))
			if _, err := stream.Write(msg[:k]); err != nil {
				t.Fatalf("at byte %d: %v", sent, err)
			}
			sent += k
		}
		var matched [8]byte
		if _, err := io.ReadFull(stream, matched[:]); err != nil {
			t.Fatal(err)
		}
		if n := binary.BigEndian.Uint64(matched[:]); n != size {
			t.Fatalf("the target matched %d of %d bytes", n, size)
		}
		if _, _, err := stream.Conn.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
			t.Fatalf("after the answer: %v, want close 1000", err)
		}
	})

	waitFor(t, 5*time.Second, "both sessions' ends", func() bool {
		return logs.FilterMessage("session ended").Len() == 2 && Sessions.Len() == 0
	})
	for _, e := range logs.FilterMessage("session ended").All() {
		if r := e.ContextMap()["reason"]; r != reasonTargetClosed {
			t.Errorf("a session ended with %q, want %q", r, reasonTargetClosed)
		}
	}
}

// TestStalledTLSBrowser: a wss browser that stops reading while it sends
// pongs (which keep it from looking gone) is found by the stall check,
// with frames of a whole relay buffer written in one go, and its session
// ends within a few ping intervals, holding no buffer afterwards.
func TestStalledTLSBrowser(t *testing.T) {
	url, logs := consoleServer(t, true, startLoadTarget(t), 200*time.Millisecond)
	d := *wssDialer
	d.NetDial = func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(16 << 10)
		}
		return c, err
	}
	stream := openLoad(t, &d, url, 's', 1<<40)
	if _, err := io.ReadFull(stream, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if stream.Conn.WriteControl(websocket.PongMessage, nil, time.Now().Add(time.Second)) != nil {
				return
			}
		}
	}()
	waitFor(t, 5*time.Second, "the session's end", func() bool {
		return logs.FilterMessage("session ended").Len() == 1 && Sessions.Len() == 0
	})
	if r := logs.FilterMessage("session ended").All()[0].ContextMap()["reason"]; r != reasonBrowserStalled {
		t.Fatalf("the session ended with %q, want %q", r, reasonBrowserStalled)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !ok(); {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
