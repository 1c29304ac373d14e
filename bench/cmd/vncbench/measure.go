package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsconnect"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
)

// stream is one session as a client sees it: messages out, a byte stream in.
// Over a WebSocket each send is one binary message; over TCP it is one write.
type stream interface {
	send(p []byte) error
	io.Reader
	setDeadline(t time.Time)
	Close() error
}

// dialFunc opens a session up to (not including) the RFB greeting.
type dialFunc func(ctx context.Context) (stream, error)

type tcpStream struct{ net.Conn }

func (s tcpStream) send(p []byte) error        { _, err := s.Write(p); return err }
func (s tcpStream) setDeadline(t time.Time)    { _ = s.SetDeadline(t) }
func (s tcpStream) Read(p []byte) (int, error) { return s.Conn.Read(p) }

func dialTCP(addr string) dialFunc {
	d := net.Dialer{Timeout: 10 * time.Second}
	return func(ctx context.Context) (stream, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return tcpStream{c}, nil
	}
}

// wsStream is a stream over a WebSocket's binary messages, as noVNC uses it.
type wsStream struct {
	*wsstream.Stream
}

func (s wsStream) send(p []byte) error { return s.Conn.WriteMessage(websocket.BinaryMessage, p) }

func (s wsStream) setDeadline(t time.Time) {
	_ = s.Conn.SetReadDeadline(t)
	_ = s.Conn.SetWriteDeadline(t)
}

func (s wsStream) Close() error { return s.Conn.Close() }

// dialWS dials a WebSocket the way noVNC does: no subprotocol, binary
// messages, no Origin (not a browser, so allowed). bufSize sets gorilla's
// read and write buffers; wss skips certificate checks (tls internal).
func dialWS(url string, bufSize int) dialFunc {
	d := websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   bufSize,
		WriteBufferSize:  bufSize,
		TLSClientConfig:  &tls.Config{InsecureSkipVerify: true},
	}
	return func(ctx context.Context) (stream, error) {
		c, resp, err := d.DialContext(ctx, url, nil)
		if err != nil {
			if resp != nil {
				return nil, fmt.Errorf("websocket handshake: %s: %w", resp.Status, err)
			}
			return nil, err
		}
		return wsStream{wsstream.New(c)}, nil
	}
}

// dialStream dials a WebSocket over HTTP/2 or HTTP/3 extended CONNECT, as
// a browser on its own connection does: each session has a connection of
// its own, closed with it.
func dialStream(h3 bool, url string) dialFunc {
	tlsConf := &tls.Config{InsecureSkipVerify: true}
	return func(ctx context.Context) (stream, error) {
		var (
			c       *websocket.Conn
			closeFn func() error
			err     error
		)
		if h3 {
			host := strings.SplitN(strings.TrimPrefix(url, "https://"), "/", 2)[0]
			d, derr := wsconnect.DialH3(ctx, host, tlsConf)
			if derr != nil {
				return nil, derr
			}
			c, _, err = d.Dial(ctx, url, nil)
			closeFn = d.Close
		} else {
			d := wsconnect.NewH2(tlsConf)
			c, _, err = d.Dial(ctx, url, nil)
			closeFn = func() error { d.Transport.CloseIdleConnections(); return nil }
		}
		if err != nil {
			closeFn()
			return nil, err
		}
		return closingStream{wsStream{wsstream.New(c)}, closeFn}, nil
	}
}

// closingStream closes its connection with the session.
type closingStream struct {
	wsStream
	closeConn func() error
}

func (s closingStream) Close() error {
	err := s.wsStream.Close()
	s.closeConn()
	return err
}

// dialWSRFB dials an RFB-aware route: the proxy has logged in to the load
// target and offers security None, which this does as noVNC would, up to
// and including ClientInit. The stream then reads as if it started with the
// target's greeting, so that openSession runs unchanged. fenced wraps what
// is sent in ClientFence messages, for a view-only route (see loadtarget).
func dialWSRFB(url string, bufSize int, fenced bool) dialFunc {
	dial := dialWS(url, bufSize)
	return func(ctx context.Context) (stream, error) {
		s, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		s.setDeadline(time.Now().Add(30 * time.Second))
		if err := rfbNone(s); err != nil {
			s.Close()
			return nil, fmt.Errorf("RFB handshake with the proxy: %w", err)
		}
		return &rfbStream{stream: s, greeting: []byte(loadtarget.Greeting), fenced: fenced}, nil
	}
}

// rfbNone runs the client side of the handshake with the proxy, which
// offers RFB 3.8 and security None in the target's place, and sends
// ClientInit (shared).
func rfbNone(s stream) error {
	res, err := rfb.ClientLogin(messageWriter{s}, rfb.HandshakeOptions{})
	if err != nil {
		return err
	}
	if res.Minor != 8 || res.Security != rfb.SecurityNone {
		return fmt.Errorf("security %s over RFB 3.%d, want none over 3.8", res, res.Minor)
	}
	return s.send([]byte{1})
}

// messageWriter sends each Write as one message, as the handshake's steps
// go out one by one.
type messageWriter struct{ stream }

func (w messageWriter) Write(p []byte) (int, error) {
	if err := w.send(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// rfbStream is a session through an RFB-aware route.
type rfbStream struct {
	stream
	greeting []byte
	fenced   bool
	buf      []byte
}

func (s *rfbStream) Read(p []byte) (int, error) {
	if len(s.greeting) > 0 {
		n := copy(p, s.greeting)
		s.greeting = s.greeting[n:]
		return n, nil
	}
	return s.stream.Read(p)
}

func (s *rfbStream) send(p []byte) error {
	if !s.fenced {
		return s.stream.send(p)
	}
	s.buf = loadtarget.AppendFences(s.buf[:0], p)
	return s.stream.send(s.buf)
}

// openSession dials, reads and checks the RFB greeting and sends cmd.
func openSession(ctx context.Context, dial dialFunc, cmd []byte) (stream, error) {
	s, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	s.setDeadline(time.Now().Add(30 * time.Second))
	var g [len(loadtarget.Greeting)]byte
	if _, err := io.ReadFull(s, g[:]); err != nil {
		s.Close()
		return nil, fmt.Errorf("reading greeting: %w", err)
	}
	if string(g[:]) != loadtarget.Greeting {
		s.Close()
		return nil, fmt.Errorf("unexpected greeting %q", g[:])
	}
	if cmd != nil {
		if err := s.send(cmd); err != nil {
			s.Close()
			return nil, fmt.Errorf("sending command: %w", err)
		}
	}
	return s, nil
}

func sizedCommand(c byte, n int64) []byte {
	b := make([]byte, 9)
	b[0] = c
	binary.BigEndian.PutUint64(b[1:], uint64(n))
	return b
}

// corpus is the deterministic stream 's' sends and 'v' expects,
// precomputed so that checking what arrives costs a memcmp.
type corpus struct {
	data []byte
}

// measureDown has the target send n bytes and times their arrival from the
// command to the last byte; every byte is checked. Returns MB/s.
func measureDown(ctx context.Context, dial dialFunc, n int64, c *corpus) (float64, error) {
	s, err := openSession(ctx, dial, nil)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	s.setDeadline(time.Now().Add(10 * time.Minute))
	start := time.Now()
	if err := s.send(sizedCommand('s', n)); err != nil {
		return 0, err
	}
	buf := make([]byte, 256<<10)
	var off int64
	for off < n {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		k, err := s.Read(buf)
		if k > 0 {
			if off+int64(k) > n {
				return 0, errors.New("received more than requested")
			}
			if !bytes.Equal(buf[:k], c.data[off:off+int64(k)]) {
				return 0, fmt.Errorf("corrupted stream near offset %d", off)
			}
			off += int64(k)
		}
		if err != nil {
			return 0, fmt.Errorf("after %d of %d bytes: %w", off, n, err)
		}
	}
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}

// measureUp sends n bytes of the stream in 64 KiB messages and times them
// until the target, which compares each byte with the stream, answers that
// all n arrived intact.
func measureUp(ctx context.Context, dial dialFunc, n int64, c *corpus) (float64, error) {
	s, err := openSession(ctx, dial, nil)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	s.setDeadline(time.Now().Add(10 * time.Minute))
	start := time.Now()
	if err := s.send(sizedCommand('v', n)); err != nil {
		return 0, err
	}
	const msg = 64 << 10
	for off := int64(0); off < n; off += msg {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		end := min(off+msg, n)
		if err := s.send(c.data[off:end]); err != nil {
			return 0, fmt.Errorf("after %d of %d bytes: %w", off, n, err)
		}
	}
	var got [8]byte
	if _, err := io.ReadFull(s, got[:]); err != nil {
		return 0, fmt.Errorf("reading the target's answer: %w", err)
	}
	if m := int64(binary.BigEndian.Uint64(got[:])); m != n {
		return 0, fmt.Errorf("the target received a corrupted stream near offset %d", m)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}

// measureRTT times count 16-byte echoes, after a warm-up, and returns the
// p50 and p99 in microseconds.
func measureRTT(ctx context.Context, dial dialFunc, count int) (p50, p99 float64, err error) {
	s, err := openSession(ctx, dial, []byte{'e'})
	if err != nil {
		return 0, 0, err
	}
	defer s.Close()
	s.setDeadline(time.Now().Add(5 * time.Minute))
	out := []byte("0123456789abcdef")
	in := make([]byte, len(out))
	lat := make([]float64, 0, count)
	warm := count / 10
	for i := 0; i < warm+count; i++ {
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		t0 := time.Now()
		if err := s.send(out); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(s, in); err != nil {
			return 0, 0, err
		}
		d := time.Since(t0)
		if !bytes.Equal(in, out) {
			return 0, 0, errors.New("echo differs")
		}
		if i >= warm {
			lat = append(lat, float64(d.Nanoseconds())/1e3)
		}
	}
	sort.Float64s(lat)
	return percentile(lat, 50), percentile(lat, 99), nil
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// measureOpenRate runs openers concurrent loops of dial + upgrade + greeting
// read + close for d and returns sessions per second and how many opened.
func measureOpenRate(ctx context.Context, dial dialFunc, openers int, d time.Duration) (float64, int64, error) {
	var ok, failed atomic.Int64
	var firstErr error
	var once sync.Once
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range openers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				s, err := openSession(ctx, dial, nil)
				if err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
					continue
				}
				s.Close()
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return 0, 0, ctx.Err()
	}
	if f := failed.Load(); f > 0 {
		return 0, 0, fmt.Errorf("%d of %d session opens failed, first: %w", f, f+ok.Load(), firstErr)
	}
	return float64(ok.Load()) / elapsed.Seconds(), ok.Load(), nil
}

// idleResult is the memory-per-idle-session measurement.
type idleResult struct {
	sessions  int
	answered  int
	perKiB    float64
	baseKiB   int64
	loadedKiB int64
}

// measureIdle opens n echo sessions, lets them sit, samples the proxy's
// memory, then checks that every one still answers a one-byte ping.
func measureIdle(ctx context.Context, dials []dialFunc, n int, pid int) (idleResult, error) {
	dial := dials[0]
	// One session first, so lazily built state (resolver, pools) is in the
	// baseline.
	if s, err := openSession(ctx, dial, []byte{'e'}); err != nil {
		return idleResult{}, err
	} else {
		s.Close()
	}
	time.Sleep(time.Second)
	base, err := sampleTree(pid)
	if err != nil {
		return idleResult{}, err
	}
	sessions := make([]stream, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				s, err := openSession(ctx, dials[i%len(dials)], []byte{'e'})
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("opening idle session %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
				s.setDeadline(time.Time{})
				sessions[i] = s
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, s := range sessions {
			if s != nil {
				s.Close()
			}
		}
	}()
	if firstErr != nil {
		return idleResult{}, firstErr
	}
	if ctx.Err() != nil {
		return idleResult{}, ctx.Err()
	}
	time.Sleep(2 * time.Second)
	loaded, err := sampleTree(pid)
	if err != nil {
		return idleResult{}, err
	}
	res := idleResult{
		sessions:  n,
		baseKiB:   base.pssKiB,
		loadedKiB: loaded.pssKiB,
		perKiB:    float64(loaded.pssKiB-base.pssKiB) / float64(n),
	}
	ping := []byte{'p'}
	in := make([]byte, 1)
	for _, s := range sessions {
		s.setDeadline(time.Now().Add(10 * time.Second))
		if s.send(ping) != nil {
			continue
		}
		if _, err := io.ReadFull(s, in); err == nil && in[0] == 'p' {
			res.answered++
		}
	}
	return res, nil
}

// rotate opens each console with the next of dials, round robin.
func rotate(dials []dialFunc) dialFunc {
	var next atomic.Uint64
	return func(ctx context.Context) (stream, error) {
		i := next.Add(1) - 1
		return dials[i%uint64(len(dials))](ctx)
	}
}

// rootCA is Caddy's local CA root, read from its storage once Caddy has
// written it.
type rootCA struct {
	path string
	mu   sync.Mutex
	pool *x509.CertPool
}

func (r *rootCA) get() (*x509.CertPool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pool != nil {
		return r.pool, nil
	}
	pem, err := os.ReadFile(r.path)
	if err != nil {
		return nil, fmt.Errorf("Caddy's local CA root: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", r.path)
	}
	r.pool = pool
	return pool, nil
}

// dialNative opens a console on the native listener at addr as a native
// viewer does: RFB 3.8, VeNCrypt X509Plain (TLS, the certificate checked
// against Caddy's local CA; the token as the password), then ClientInit.
// The proxy has logged in to the load target and relays ClientInit on, so
// the stream reads as if it started with the target's greeting, as
// through an RFB-aware route.
func dialNative(addr, token string, roots *rootCA) dialFunc {
	d := net.Dialer{Timeout: 10 * time.Second}
	return func(ctx context.Context) (stream, error) {
		pool, err := roots.get()
		if err != nil {
			return nil, err
		}
		raw, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
		greeting := make([]byte, rfb.VersionLen)
		if _, err := io.ReadFull(raw, greeting); err != nil {
			raw.Close()
			return nil, fmt.Errorf("reading the listener's greeting: %w", err)
		}
		conn, _, err := rfb.Login(raw, greeting, rfb.Credentials{
			Username:   "vncbench",
			Password:   token,
			TLS:        &tls.Config{ServerName: nativeServerName, RootCAs: pool, MinVersion: tls.VersionTLS12},
			RequireTLS: true,
		})
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("native handshake: %w", err)
		}
		if _, err := conn.Write([]byte{1}); err != nil { // ClientInit, shared
			conn.Close()
			return nil, err
		}
		return &rfbStream{stream: tcpStream{conn}, greeting: []byte(loadtarget.Greeting)}, nil
	}
}
