//go:build soak

package caddymodule

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsconnect"
)

// The soak (make soak): about 1,000 concurrent consoles through the real
// binary, of every kind a hostile or unlucky peer makes, while the config
// is reloaded every few seconds. Each console checks that it ended as
// documented and within its bound; normal consoles check every byte both
// ways. Afterwards the proxy's descriptors and goroutines must be back to
// their baseline.
//
// SOAK_DURATION (default 90s) and SOAK_CONSOLES (default 1000) set its size;
// SOAK_TRANSPORT (ws, the default; h2; h3) how browsers reach the site:
// HTTP/1.1 upgrades over plain HTTP, or extended CONNECT over HTTPS with
// Caddy's default protocols, each console on a connection of its own.
// SOAK_VERBOSE lists every console that ended otherwise, not the first 20.

// soakPing is the soak's ping_interval: stalls end within 2-3 of these. Not
// shorter: on a machine the soak saturates, timers and readers can lag a
// second or more, and the rule ends a console after two intervals without
// progress.
const soakPing = 2 * time.Second

type soakKind struct {
	name   string
	weight int
	run    func(s *soak) error
}

type soak struct {
	t         *testing.T
	reloadsMu sync.Mutex
	reloadAt  []time.Time // when each reload was asked for
	url       string      // up to the token
	transport string      // ws, h2 or h3
	vanishing string      // token of the VNC server that resets its connections
	lost      atomic.Int64
	checked   atomic.Int64
	// conns holds, for consoles on streams, what drops their connection
	// (by *websocket.Conn).
	conns sync.Map
}

func TestSoak(t *testing.T) {
	duration := envDuration("SOAK_DURATION", 90*time.Second)
	consoles := envInt("SOAK_CONSOLES", 1000)

	target, _ := startLoadTarget(t)
	vanish := startVanishingTarget(t)
	dir := t.TempDir()
	tokens := writeTokenFile(t, dir, "normal: "+target, "vanishing: "+vanish)
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	body := func(idle string) string {
		return fmt.Sprintf("vnc_proxy /websockify {\n\t\tresolver file %s\n\t\tping_interval %v\n\t\tmax_message_size 256KiB\n\t\tidle_timeout %s\n\t}", tokens, soakPing, idle)
	}
	transport := os.Getenv("SOAK_TRANSPORT")
	if transport == "" {
		transport = "ws"
	}
	c := caddyProcess{admin: admin, https: transport != "ws", xconnect: transport == "h2"}
	site, proc := startCaddyProcessWith(t, dir, c, body("1h"))
	_, portText, _ := net.SplitHostPort(site)
	port, _ := strconv.Atoi(portText)
	pid := proc.Cmd.Process.Pid
	s := &soak{t: t, url: "ws://" + site + "/websockify?token=", transport: transport, vanishing: "vanishing"}
	if transport != "ws" {
		s.url = "https://" + site + "/websockify?token="
		waitFor(t, 15*time.Second, "the site's certificate", func() bool { return soakEcho(s) == nil })
	}

	// One console first, so lazily made state is in the baseline.
	if err := soakEcho(s); err != nil {
		t.Fatalf("first console: %v", err)
	}
	time.Sleep(time.Second)
	base := soakSample(t, pid, admin)

	kinds := []soakKind{
		{"normal, echo checked byte for byte", 30, soakEcho},
		{"normal, stream checked byte for byte", 10, soakStream},
		{"browser stops reading", 10, soakStopsReading},
		{"browser vanishes (reset)", 10, soakBrowserVanishes},
		{"VNC server vanishes (reset)", 10, soakTargetVanishes},
		{"oversized message", 10, soakOversized},
		{"malformed frame", 10, soakMalformed},
		{"browser closes", 10, soakBrowserCloses},
	}
	total := 0
	for _, k := range kinds {
		total += k.weight
	}
	type tally struct{ ok, failed, atReload int64 }
	tallies := make([]tally, len(kinds))
	var mu sync.Mutex
	var failures []string

	// Reloads every 3s, alternating two configs, under live consoles.
	stopReloads := make(chan struct{})
	var reloads atomic.Int64
	var reloadsDone sync.WaitGroup
	reloadsDone.Go(func() {
		if os.Getenv("SOAK_RELOADS") == "off" {
			<-stopReloads
			return
		}
		idle := []string{"1h", "2h"}
		for i := 0; ; i++ {
			select {
			case <-stopReloads:
				return
			case <-time.After(3 * time.Second):
			}
			s.reloadsMu.Lock()
			s.reloadAt = append(s.reloadAt, time.Now())
			s.reloadsMu.Unlock()
			resp, err := http.Post("http://"+admin+"/load", "text/caddyfile",
				strings.NewReader(c.caddyfile(dir, port, body(idle[i%2]))))
			if err != nil {
				t.Errorf("reload: %v", err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("reload: %s", resp.Status)
			}
			reloads.Add(1)
		}
	})

	end := time.Now().Add(duration)
	var workers sync.WaitGroup
	for range consoles {
		workers.Go(func() {
			for time.Now().Before(end) {
				n := rand.IntN(total)
				i := 0
				for n >= kinds[i].weight {
					n -= kinds[i].weight
					i++
				}
				start := time.Now()
				err := kinds[i].run(s)
				mu.Lock()
				if err != nil && (errors.Is(err, errRejectedAtShutdown) || errors.Is(err, errOpenDropped) && s.nearReload(start)) {
					// Caddy binds a new socket (SO_REUSEPORT) per config;
					// connections the kernel queued on the old one are
					// reset when it closes, before any handler sees them.
					tallies[i].atReload++
				} else if err != nil {
					tallies[i].failed++
					if len(failures) < 20 || os.Getenv("SOAK_VERBOSE") != "" {
						failures = append(failures, fmt.Sprintf("%s: %v (near a reload: %v)", kinds[i].name, err, s.nearReload(start)))
					}
				} else {
					tallies[i].ok++
				}
				mu.Unlock()
			}
		})
	}
	workers.Wait()
	close(stopReloads)
	reloadsDone.Wait()

	// Everything the consoles held must be given back.
	var after soakStats
	deadline := time.Now().Add(15 * time.Second)
	for {
		after = soakSample(t, pid, admin)
		if after.fds <= base.fds+2 && after.pipes <= base.pipes+2*16 && after.goroutines <= base.goroutines+5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}

	var report strings.Builder
	fmt.Fprintf(&report, "soak: %v, %d concurrent consoles over %s, %d config reloads\n\n", duration, consoles, transport, reloads.Load())
	fmt.Fprintf(&report, "| kind | consoles | ended as documented, within bound | not | connection dropped at a reload, before the handler |\n|---|---:|---:|---:|---:|\n")
	var sum tally
	for i, k := range kinds {
		tl := tallies[i]
		fmt.Fprintf(&report, "| %s | %d | %d | %d | %d |\n", k.name, tl.ok+tl.failed+tl.atReload, tl.ok, tl.failed, tl.atReload)
		sum.ok += tl.ok
		sum.failed += tl.failed
		sum.atReload += tl.atReload
	}
	fmt.Fprintf(&report, "| all | %d | %d | %d | %d |\n\n", sum.ok+sum.failed+sum.atReload, sum.ok, sum.failed, sum.atReload)
	fmt.Fprintf(&report, "bytes checked on normal consoles: %d, lost or reordered: %d\n\n", s.checked.Load(), s.lost.Load())
	fmt.Fprintf(&report, "| proxy | before | after |\n|---|---:|---:|\n")
	fmt.Fprintf(&report, "| file descriptors other than pipes | %d | %d |\n| pipe descriptors (at most 16 idle pipes are kept) | %d | %d |\n| goroutines | %d | %d |\n| RSS (MiB) | %.1f | %.1f |\n",
		base.fds, after.fds, base.pipes, after.pipes, base.goroutines, after.goroutines, float64(base.rssKiB)/1024, float64(after.rssKiB)/1024)
	t.Log("\n" + report.String())
	if t.Failed() || len(failures) > 0 {
		if logs, err := os.ReadFile(filepath.Join(dir, "caddy.log")); err == nil {
			_ = os.WriteFile(filepath.Join(os.TempDir(), "soak-caddy.log"), logs, 0o644)
			t.Logf("Caddy's log: %s", filepath.Join(os.TempDir(), "soak-caddy.log"))
		}
	}
	if out := os.Getenv("SOAK_REPORT"); out != "" {
		_ = os.WriteFile(out, []byte(report.String()), 0o644)
	}
	sort.Strings(failures)
	for _, f := range failures {
		t.Error(f)
	}
	if s.lost.Load() != 0 {
		t.Errorf("%d bytes lost or reordered on normal consoles", s.lost.Load())
	}
	if after.fds > base.fds+2 || after.pipes > base.pipes+2*16 || after.goroutines > base.goroutines+5 {
		t.Errorf("the proxy holds %d descriptors, %d pipe descriptors and %d goroutines; %d, %d and %d before",
			after.fds, after.pipes, after.goroutines, base.fds, base.pipes, base.goroutines)
	}
}

// errOpenDropped: the connection was closed before any HTTP answer.
var errOpenDropped = errors.New("opening: connection dropped before an answer")

// errRejectedAtShutdown: an old config's HTTP/3 server, shutting down
// gracefully, refused the request (a browser retries it).
var errRejectedAtShutdown = fmt.Errorf("%w: rejected by a server shutting down", errOpenDropped)

// nearReload reports whether a console that began at start may have met a
// reload while it opened.
func (s *soak) nearReload(start time.Time) bool {
	s.reloadsMu.Lock()
	defer s.reloadsMu.Unlock()
	// The old config stops once the new one runs, which under the soak's
	// load can take a few seconds after the reload was asked for.
	for _, at := range s.reloadAt {
		if d := start.Sub(at); d > -time.Second && d < 3*time.Second {
			return true
		}
	}
	return false
}

// dial opens a console and reads the greeting; small sets a small
// receive buffer, for browsers that stop reading (over HTTP/1.1; a stream's
// flow control window fills by itself). close closes it.
func (s *soak) dial(token string, small bool) (*websocket.Conn, error) {
	var (
		ws   *websocket.Conn
		resp *http.Response
		err  error
	)
	if s.transport == "ws" {
		d := &websocket.Dialer{HandshakeTimeout: 20 * time.Second}
		if small {
			d = smallWindowDialer(4096)
		}
		ws, resp, err = d.Dial(s.url+token, nil)
	} else {
		ws, resp, err = s.dialStream(token)
	}
	if err != nil {
		if resp == nil && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			return nil, fmt.Errorf("%w: %v", errOpenDropped, err)
		}
		// A server shutting down gracefully (the old config's, at a
		// reload) refuses new requests on its connections, which a
		// browser retries: HTTP/3's H3_REQUEST_REJECTED; over HTTP/2 a
		// GOAWAY or a refused stream, after which Go's client reports the
		// request body it closed.
		if resp == nil && strings.Contains(err.Error(), "H3_REQUEST_REJECTED") {
			// quic-go sends it in a graceful shutdown only: a reload's,
			// however late under load.
			return nil, fmt.Errorf("%w: %v", errRejectedAtShutdown, err)
		}
		if resp == nil && (strings.Contains(err.Error(), "GOAWAY") ||
			strings.Contains(err.Error(), "graceful shutdown") || errors.Is(err, io.ErrClosedPipe)) {
			return nil, fmt.Errorf("%w: %v", errOpenDropped, err)
		}
		return nil, fmt.Errorf("opening: %w", err)
	}
	// As a browser, a close frame is what counts, whether or not the
	// answer to it still gets through.
	// Likewise a pong that no longer gets through (the proxy, having sent
	// its close frame, stopped reading) does not hide the close frame
	// behind it.
	ws.SetCloseHandler(func(code int, _ string) error {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		return nil
	})
	ws.SetPingHandler(func(data string) error {
		_ = ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		return nil
	})
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != loadtarget.Greeting {
		s.close(ws)
		return nil, fmt.Errorf("greeting %q: %v", msg, err)
	}
	return ws, nil
}

// dialStream opens a console over HTTP/2 or HTTP/3 on a connection of its
// own, which s.close and s.drop end.
func (s *soak) dialStream(token string) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tlsConf := &tls.Config{InsecureSkipVerify: true}
	if s.transport == "h3" {
		host := strings.TrimPrefix(strings.SplitN(s.url, "/websockify", 2)[0], "https://")
		d, err := wsconnect.DialH3(ctx, host, tlsConf)
		if err != nil {
			return nil, nil, err
		}
		ws, resp, err := d.Dial(ctx, s.url+token, nil)
		if err != nil {
			d.Close()
			return nil, resp, err
		}
		s.conns.Store(ws, func() { d.Close() })
		return ws, resp, nil
	}
	var raw net.Conn
	d := wsconnect.NewH2(tlsConf)
	d.Transport.DialTLSContext = func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
		c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
		raw = c
		return c, err
	}
	ws, resp, err := d.Dial(ctx, s.url+token, nil)
	if err != nil {
		d.Transport.CloseIdleConnections()
		return nil, resp, err
	}
	s.conns.Store(ws, func() {
		if tc, ok := raw.(*tls.Conn); ok {
			_ = tc.NetConn().(*net.TCPConn).SetLinger(0)
		}
		raw.Close()
	})
	return ws, resp, nil
}

// close closes a console, and the connection of one on a stream.
func (s *soak) close(ws *websocket.Conn) {
	ws.Close()
	if drop, ok := s.conns.LoadAndDelete(ws); ok {
		drop.(func())()
	}
}

// drop makes the browser vanish: a reset of its TCP connection, or the
// abrupt close of its QUIC connection.
func (s *soak) drop(ws *websocket.Conn) error {
	if drop, ok := s.conns.LoadAndDelete(ws); ok {
		drop.(func())()
		return nil
	}
	_ = ws.UnderlyingConn().(*net.TCPConn).SetLinger(0)
	return ws.UnderlyingConn().Close()
}

func soakEcho(s *soak) error {
	ws, err := s.dial("normal", false)
	if err != nil {
		return err
	}
	defer s.close(ws)
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte{'e'}); err != nil {
		return err
	}
	done := make(chan error, 1)
	sent := make(chan []byte, 64)
	var pending atomic.Int64 // bytes sent and not yet echoed
	go func() {
		var want []byte
		for {
			_, r, err := ws.NextReader()
			if err != nil {
				if closeCode(err) == websocket.CloseNormalClosure && len(want) == 0 {
					err = nil
				}
				done <- err
				return
			}
			got, err := io.ReadAll(r)
			if err != nil {
				done <- err
				return
			}
			for len(got) > 0 {
				if len(want) == 0 {
					want = <-sent
				}
				n := min(len(got), len(want))
				if !bytes.Equal(got[:n], want[:n]) {
					s.lost.Add(int64(n))
				}
				s.checked.Add(int64(n))
				pending.Add(-int64(n))
				got, want = got[n:], want[n:]
			}
		}
	}()
	for range 2 + rand.IntN(20) {
		msg := make([]byte, 1+rand.IntN(64<<10))
		for i := range msg {
			msg[i] = byte(rand.Uint32())
		}
		pending.Add(int64(len(msg)))
		sent <- msg
		if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			return err
		}
		time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
	}
	// Wait for the last echo, then close: the proxy echoes the close.
	deadline := time.Now().Add(20 * time.Second)
	for pending.Load() > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d bytes not echoed in 20s", pending.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(5*time.Second)); err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		return fmt.Errorf("no close echo in 10s")
	}
}

func soakStream(s *soak) error {
	ws, err := s.dial("normal", false)
	if err != nil {
		return err
	}
	defer s.close(ws)
	n := int64(1<<20 + rand.IntN(8<<20))
	if err := ws.WriteMessage(websocket.BinaryMessage, binary.BigEndian.AppendUint64([]byte{'s'}, uint64(n))); err != nil {
		return err
	}
	var off int64
	want := make([]byte, 64<<10)
	for {
		_, r, err := ws.NextReader()
		if err != nil {
			if closeCode(err) != websocket.CloseNormalClosure {
				return fmt.Errorf("after %d of %d bytes: %w", off, n, err)
			}
			break
		}
		got, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		for len(got) > 0 {
			k := min(len(got), len(want))
			loadtarget.Stream(want[:k], off)
			if !bytes.Equal(got[:k], want[:k]) {
				s.lost.Add(int64(k))
			}
			s.checked.Add(int64(k))
			off += int64(k)
			got = got[k:]
		}
	}
	if off != n {
		s.lost.Add(n - off)
		return fmt.Errorf("got %d of %d bytes", off, n)
	}
	return nil
}

// stallBound is how long after it stops reading a browser's console ends:
// two to three ping intervals, a tick's lateness on a saturated machine,
// and the close grace.
const stallBound = 4*soakPing + 2*time.Second

func soakStopsReading(s *soak) error {
	ws, err := s.dial("normal", true)
	if err != nil {
		return err
	}
	defer s.close(ws)
	if err := ws.WriteMessage(websocket.BinaryMessage, binary.BigEndian.AppendUint64([]byte{'s'}, 1<<40)); err != nil {
		return err
	}
	time.Sleep(stallBound)
	if s.transport != "ws" {
		// The proxy must have reset the stream by now: what the stream
		// still holds reads at once, then the reset. A stream still
		// alive would go on delivering.
		_ = ws.SetReadDeadline(time.Now().Add(2 * time.Second))
		if err := readUntilClose(ws); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return fmt.Errorf("still connected %v after the browser stopped reading", stallBound)
			}
		}
		return nil
	}
	// The proxy must have dropped the connection by now. Reading would
	// open the window and let its send buffer trickle in, closed or not;
	// instead, a frame sent to a closed socket draws a reset, which the
	// next read reports at once.
	c := ws.UnderlyingConn()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte{0x8a, 0x80, 1, 2, 3, 4}); err != nil { // a masked pong
		return nil
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := c.Read(make([]byte, 1)); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return fmt.Errorf("the connection is neither reset nor readable")
		}
		return nil
	}
	return fmt.Errorf("still connected %v after the browser stopped reading", stallBound)
}

func soakBrowserVanishes(s *soak) error {
	ws, err := s.dial("normal", false)
	if err != nil {
		return err
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, binary.BigEndian.AppendUint64([]byte{'s'}, 1<<40)); err != nil {
		s.close(ws)
		return err
	}
	for range 1 + rand.IntN(20) {
		if _, _, err := ws.ReadMessage(); err != nil {
			s.close(ws)
			return err
		}
	}
	return s.drop(ws)
}

func soakTargetVanishes(s *soak) error {
	ws, err := s.dial(s.vanishing, false)
	if err != nil {
		return err
	}
	defer s.close(ws)
	// The server resets within 3s; the browser hears 1000 within a second.
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	err = readUntilClose(ws)
	if closeCode(err) != websocket.CloseNormalClosure {
		return fmt.Errorf("the VNC server vanished and the browser got %v, want close 1000", err)
	}
	return nil
}

// soakAct opens a console that runs cmd (a stream, an echo), does act
// while bytes flow, and expects the close frame with code.
func soakAct(s *soak, cmd []byte, pause time.Duration, act func(ws *websocket.Conn), code int) error {
	ws, err := s.dial("normal", false)
	if err != nil {
		return err
	}
	defer s.close(ws)
	if err := ws.WriteMessage(websocket.BinaryMessage, cmd); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- readUntilClose(ws) }()
	time.Sleep(time.Duration(rand.Int64N(int64(pause))))
	act(ws)
	return awaitClose(done, code)
}

var streamForever = binary.BigEndian.AppendUint64([]byte{'s'}, 1<<40)

// soakOversized sends a message over max_message_size to an echoing VNC
// server, so bytes move both ways meanwhile. (A server that reads nothing
// would stop the relay before the limit is reached: the proxy relays a
// message's frames as they come, and a server that stops reading ends the
// console with 1000.)
func soakOversized(s *soak) error {
	return soakAct(s, []byte{'e'}, 200*time.Millisecond, func(ws *websocket.Conn) {
		_ = ws.WriteMessage(websocket.BinaryMessage, make([]byte, 300<<10))
	}, websocket.CloseMessageTooBig)
}

func soakMalformed(s *soak) error {
	return soakAct(s, streamForever, 200*time.Millisecond, func(ws *websocket.Conn) {
		// A masked binary frame announcing 2^63 + 5 bytes.
		_, _ = ws.UnderlyingConn().Write([]byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4})
	}, websocket.CloseProtocolError)
}

func soakBrowserCloses(s *soak) error {
	return soakAct(s, streamForever, 500*time.Millisecond, func(ws *websocket.Conn) {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"), time.Now().Add(5*time.Second))
	}, 4001)
}

// awaitClose waits, within the close grace and a margin, for the close
// frame with code.
func awaitClose(done chan error, code int) error {
	select {
	case err := <-done:
		if closeCode(err) != code {
			return fmt.Errorf("got %v, want close %d", err, code)
		}
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("no close %d in 10s", code)
	}
}

// startVanishingTarget is a VNC server stand-in that greets, echoes, and
// resets each connection 0.5 to 3 seconds after it opened.
func startVanishingTarget(t *testing.T) string {
	l := listenLoopback(t)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = io.WriteString(c, loadtarget.Greeting)
				time.AfterFunc(500*time.Millisecond+time.Duration(rand.IntN(2500))*time.Millisecond, func() {
					_ = c.(*net.TCPConn).SetLinger(0)
					c.Close()
				})
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

type soakStats struct {
	fds, pipes, goroutines int
	rssKiB                 int64
}

// soakSample counts the proxy's descriptors (/proc), goroutines (the admin
// endpoint's pprof) and RSS.
func soakSample(t *testing.T, pid int, admin string) soakStats {
	t.Helper()
	var st soakStats
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	if entries, err := os.ReadDir(fdDir); err == nil {
		for _, e := range entries {
			if l, _ := os.Readlink(filepath.Join(fdDir, e.Name())); strings.HasPrefix(l, "pipe:") {
				st.pipes++
			} else {
				st.fds++
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				st.rssKiB, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			}
		}
	}
	resp, err := http.Get("http://" + admin + "/debug/pprof/goroutine?debug=1")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		first, _, _ := strings.Cut(string(b), "\n")
		if v, ok := strings.CutPrefix(first, "goroutine profile: total "); ok {
			st.goroutines, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return st
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
