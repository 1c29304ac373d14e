//go:build soak && linux

package caddymodule

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

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
	reloads   []reload
	url       string // up to the token
	transport string // ws, h2 or h3
	vanishing string // token of the VNC server that resets its connections
	lost      atomic.Int64
	checked   atomic.Int64
	// conns holds, for consoles on streams, what drops their connection
	// (by *websocket.Conn).
	conns sync.Map
	// greeted and opened hold when each console's greeting was read, and
	// when it began to open; ponged when it answered pings, as *pongs (by
	// *websocket.Conn).
	greeted, opened, ponged sync.Map
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
	type tally struct{ ok, failed, atReload, paused, slowTarget int64 }
	tallies := make([]tally, len(kinds))
	var mu sync.Mutex
	var failures []string
	type refusal struct {
		kind int
		err  *refusedOpen
		desc string
	}
	var refusals []refusal
	type deferred struct {
		kind int
		err  *pausedDrop
		desc string
	}
	var paused []deferred

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
			s.reloads = append(s.reloads, reload{asked: time.Now()})
			n := len(s.reloads)
			s.reloadsMu.Unlock()
			status, err := s.load(admin, c.caddyfile(dir, port, body(idle[i%2])))
			s.reloadsMu.Lock()
			s.reloads[n-1].done = time.Now()
			s.reloadsMu.Unlock()
			if err != nil {
				t.Errorf("reload: %v", err)
				continue
			}
			if status != http.StatusOK {
				t.Errorf("reload: %s", http.StatusText(status))
			}
			reloads.Add(1)
		}
	})

	kernelBefore := tcpExt()
	began := time.Now()
	end := began.Add(duration)
	// How late the soak's own timers run tells how saturated the machine
	// is, for the report.
	var lateMax atomic.Int64
	lateDone := make(chan struct{})
	go func() {
		for time.Now().Before(end) {
			at := time.Now()
			time.Sleep(100 * time.Millisecond)
			if late := int64(time.Since(at) - 100*time.Millisecond); late > lateMax.Load() {
				lateMax.Store(late)
			}
		}
		close(lateDone)
	}()
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
				if err != nil && (errors.Is(err, errRejectedAtShutdown) || errors.Is(err, errOpenDropped) && s.nearReload(start, time.Now())) {
					// Caddy binds a new socket (SO_REUSEPORT) per config;
					// connections the kernel queued on the old one are
					// reset when it closes, before any handler sees them.
					tallies[i].atReload++
				} else if pd := (*pausedDrop)(nil); errors.As(err, &pd) {
					paused = append(paused, deferred{i, pd, fmt.Sprintf("%s: %v (began %v into the soak, ended %v later)",
						kinds[i].name, err, start.Sub(began).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))})
				} else if ro := (*refusedOpen)(nil); errors.As(err, &ro) {
					refusals = append(refusals, refusal{i, ro, fmt.Sprintf("%s: %v (began %v into the soak, ended %v later)",
						kinds[i].name, err, start.Sub(began).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))})
				} else if err != nil {
					tallies[i].failed++
					if len(failures) < 20 || os.Getenv("SOAK_VERBOSE") != "" {
						failures = append(failures, fmt.Sprintf("%s: %v (near a reload: %v; began %v into the soak, ended %v later)",
							kinds[i].name, err, s.nearReload(start, time.Now()), start.Sub(began).Round(time.Millisecond), time.Since(start).Round(time.Millisecond)))
					}
				} else {
					tallies[i].ok++
				}
				mu.Unlock()
			}
		})
	}
	workers.Wait()
	<-lateDone
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

	// A 502 is the documented answer when the VNC server does not greet
	// within dial_timeout; any other is not.
	caddyLog, _ := os.ReadFile(filepath.Join(dir, "caddy.log"))
	slow := slowGreetings(caddyLog)
	// A browser of the soak that read nothing for two ping intervals
	// (held up on a saturated machine) and was dropped ended as
	// documented if the proxy ended its console meanwhile for a reason
	// that allows it.
	ended := stallEnds(caddyLog)
	for _, p := range paused {
		ok := false
		for _, ls := range ended[p.err.client] {
			ok = ok || p.err.explains(ls.started, ls.ended)
		}
		if ok {
			tallies[p.kind].paused++
			continue
		}
		tallies[p.kind].failed++
		if len(failures) < 20 || os.Getenv("SOAK_VERBOSE") != "" {
			failures = append(failures, p.desc)
		}
	}
	for _, r := range refusals {
		if slow[r.err.client] > 0 {
			slow[r.err.client]--
			tallies[r.kind].slowTarget++
			continue
		}
		tallies[r.kind].failed++
		if len(failures) < 20 || os.Getenv("SOAK_VERBOSE") != "" {
			failures = append(failures, r.desc)
		}
	}

	var report strings.Builder
	fmt.Fprintf(&report, "soak: %v, %d concurrent consoles over %s, %d config reloads; the soak's own 100 ms timers ran up to %v late\n\n",
		duration, consoles, transport, reloads.Load(), time.Duration(lateMax.Load()).Round(time.Millisecond))
	fmt.Fprintf(&report, "| kind | consoles | ended as documented, within bound | not | connection dropped at a reload, before the handler | dropped after the soak's own browser read nothing for two ping intervals | refused 502: the soak's VNC server did not greet within dial_timeout |\n|---|---:|---:|---:|---:|---:|---:|\n")
	var sum tally
	for i, k := range kinds {
		tl := tallies[i]
		fmt.Fprintf(&report, "| %s | %d | %d | %d | %d | %d | %d |\n", k.name, tl.ok+tl.failed+tl.atReload+tl.paused+tl.slowTarget, tl.ok, tl.failed, tl.atReload, tl.paused, tl.slowTarget)
		sum.ok += tl.ok
		sum.failed += tl.failed
		sum.atReload += tl.atReload
		sum.paused += tl.paused
		sum.slowTarget += tl.slowTarget
	}
	fmt.Fprintf(&report, "| all | %d | %d | %d | %d | %d | %d |\n\n", sum.ok+sum.failed+sum.atReload+sum.paused+sum.slowTarget, sum.ok, sum.failed, sum.atReload, sum.paused, sum.slowTarget)
	fmt.Fprintf(&report, "bytes checked on normal consoles: %d, lost or reordered: %d\n\n", s.checked.Load(), s.lost.Load())
	if kernelAfter := tcpExt(); kernelAfter != nil && kernelBefore != nil {
		// The whole machine's, other work included: loopback TCP that
		// drops segments under memory pressure makes healthy connections
		// wait for retransmissions.
		fmt.Fprintf(&report, "the machine's TCP during the soak: %v under memory pressure, %d segments dropped by full receive queues, %d retransmitted\n\n",
			time.Duration(kernelAfter["TCPMemoryPressuresChrono"]-kernelBefore["TCPMemoryPressuresChrono"])*time.Millisecond,
			kernelAfter["TCPRcvQDrop"]-kernelBefore["TCPRcvQDrop"], kernelAfter["TCPLostRetransmit"]+kernelAfter["TCPSlowStartRetrans"]+kernelAfter["TCPFastRetrans"]-
				kernelBefore["TCPLostRetransmit"]-kernelBefore["TCPSlowStartRetrans"]-kernelBefore["TCPFastRetrans"])
	}
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

// adminClient opens a connection per request: Caddy replaces its admin
// server at every load and closes the old one's idle connections, and a
// POST sent on a kept-alive connection as it closes fails with EOF (Go's
// client retries only idempotent requests), which is no fault of the
// proxy.
var adminClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// refusedOpen is an open refused with 502 (the VNC server unavailable):
// the proxy's documented answer when the VNC server does not greet within
// dial_timeout, which the soak's stand-in, in the soak's own saturated
// process, sometimes fails to do. Which it was is told by the proxy's log
// once the soak is over (slowGreetings).
type refusedOpen struct {
	client string
	err    error
}

func (e *refusedOpen) Error() string { return e.err.Error() }
func (e *refusedOpen) Unwrap() error { return e.err }

// slowGreetings counts, by browser address, the opens the proxy refused
// because the VNC server's greeting did not come within dial_timeout.
func slowGreetings(log []byte) map[string]int {
	n := map[string]int{}
	for _, line := range bytes.Split(log, []byte("\n")) {
		var e struct {
			Msg    string `json:"msg"`
			Status int    `json:"status"`
			Client string `json:"client"`
			Error  string `json:"error"`
		}
		if json.Unmarshal(line, &e) != nil || e.Msg != "request refused" || e.Status != http.StatusBadGateway {
			continue
		}
		if strings.HasPrefix(e.Error, "reading RFB greeting: ") && strings.HasSuffix(e.Error, "i/o timeout") {
			n[e.Client]++
		}
	}
	return n
}

// errOpenDropped: the connection was closed before any HTTP answer.
var errOpenDropped = errors.New("opening: connection dropped before an answer")

// errRejectedAtShutdown: an old config's HTTP/3 server, shutting down
// gracefully, refused the request (a browser retries it).
var errRejectedAtShutdown = fmt.Errorf("%w: rejected by a server shutting down", errOpenDropped)

// A reload: when it was asked for, and when the admin endpoint answered
// (zero while it has not), by which time the new config runs and the old
// one is stopping.
type reload struct{ asked, done time.Time }

// load loads a config through the admin endpoint. Caddy replaces its admin
// server at every load, as it does the site's: a request that reaches the
// old one as it stops is dropped before it is read, and is sent again.
// Loading a config that runs already changes nothing, so a request that
// was read after all does no harm when repeated.
func (s *soak) load(admin, config string) (int, error) {
	for attempt := 0; ; attempt++ {
		resp, err := adminClient.Post("http://"+admin+"/load", "text/caddyfile", strings.NewReader(config))
		if err == nil {
			resp.Body.Close()
			return resp.StatusCode, nil
		}
		dropped := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
		if !dropped || attempt == 2 {
			return 0, err
		}
	}
}

// nearReload reports whether a console that began at start and failed at
// end was open while the listeners were swapped: a reload was asked for
// before it failed, and answered (or not yet) after it began. The old
// config's server stops once the new one runs, which on a saturated
// machine can be seconds after the reload was asked for, and it closes
// the connections it accepted and has not yet read a request from (Go's
// server counts them idle after 5s); connections queued on its socket are
// reset.
func (s *soak) nearReload(start, end time.Time) bool {
	s.reloadsMu.Lock()
	defer s.reloadsMu.Unlock()
	for _, r := range s.reloads {
		if r.asked.Add(-time.Second).Before(end) && (r.done.IsZero() || r.done.Add(time.Second).After(start)) {
			return true
		}
	}
	return false
}

// dial opens a console and reads the greeting; small sets a small
// receive buffer, for browsers that stop reading (over HTTP/1.1; a stream's
// flow control window fills by itself). close closes it.
func (s *soak) dial(token string, small bool) (*websocket.Conn, error) {
	began := time.Now()
	var (
		ws   *websocket.Conn
		resp *http.Response
		err  error
	)
	var client string // the browser's address, as the proxy logs it
	if s.transport == "ws" {
		d := &websocket.Dialer{HandshakeTimeout: 20 * time.Second}
		if small {
			d = smallWindowDialer(4096)
			d.HandshakeTimeout = 20 * time.Second
		}
		netDial := d.NetDial
		if netDial == nil {
			netDial = net.Dial
		}
		d.NetDial = func(network, addr string) (net.Conn, error) {
			c, err := netDial(network, addr)
			if err == nil {
				client = c.LocalAddr().String()
			}
			return c, err
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
		if resp != nil && resp.StatusCode == http.StatusBadGateway && client != "" {
			return nil, &refusedOpen{client: client, err: fmt.Errorf("opening: %w: %s", err, resp.Status)}
		}
		return nil, fmt.Errorf("opening: %w", err)
	}
	// As a browser, a close frame is what counts, whether or not the
	// answer to it still gets through.
	ws.SetCloseHandler(func(code int, _ string) error {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		return nil
	})
	// As a browser, a pong waits its turn behind the data frames being
	// sent, without holding up reading: a pong that no longer gets
	// through (the proxy, having sent its close frame, stopped reading)
	// does not hide the close frame behind it. Without a deadline, since
	// gorilla gives a connection up for good when one write times out: a
	// pong that waits more than a second while the proxy, itself held up
	// by a VNC server that reads slowly, does not read the browser's
	// messages must not fail the next message.
	ponged := &pongs{}
	s.ponged.Store(ws, ponged)
	ws.SetPingHandler(func(data string) error {
		go func() {
			if ws.WriteControl(websocket.PongMessage, []byte(data), time.Time{}) == nil {
				ponged.add(time.Now())
			}
		}()
		return nil
	})
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != loadtarget.Greeting {
		s.close(ws)
		return nil, fmt.Errorf("greeting %q: %v", msg, err)
	}
	s.greeted.Store(ws, time.Now())
	s.opened.Store(ws, began)
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
	s.greeted.Delete(ws)
	s.opened.Delete(ws)
	s.ponged.Delete(ws)
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

func soakEcho(s *soak) (err error) {
	ws, err := s.dial("normal", false)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("browser %v: %w", ws.LocalAddr(), err)
		}
	}()
	defer s.close(ws)
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte{'e'}); err != nil {
		return s.commandFailed(ws, err)
	}
	done := make(chan error, 1)
	sent := make(chan []byte, 64)
	var pending atomic.Int64 // bytes sent and not yet echoed
	pause := s.newReadPause(ws)
	go func() {
		var want []byte
		for {
			_, r, err := ws.NextReader()
			if err != nil {
				if closeCode(err) == websocket.CloseNormalClosure && len(want) == 0 {
					err = nil
				} else {
					err = pause.explain(err)
				}
				done <- err
				return
			}
			got, err := io.ReadAll(r)
			pause.read()
			if err != nil {
				done <- pause.explain(err)
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
			// A dropped connection fails the write; the reader tells why.
			select {
			case rerr := <-done:
				if rerr != nil {
					return fmt.Errorf("writing: %v; reading: %w", err, rerr)
				}
			case <-time.After(30 * time.Second):
			}
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
		select {
		case err := <-done:
			return fmt.Errorf("%d bytes not echoed: %w", pending.Load(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(5*time.Second)); err != nil {
		// A dropped connection fails the write; the reader tells why.
		select {
		case rerr := <-done:
			if rerr != nil {
				return fmt.Errorf("writing the close: %v; reading: %w", err, rerr)
			}
		case <-time.After(30 * time.Second):
		}
		return err
	}
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		return fmt.Errorf("no close echo in 10s")
	}
}

func soakStream(s *soak) (err error) {
	ws, err := s.dial("normal", false)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("browser %v: %w", ws.LocalAddr(), err)
		}
	}()
	defer s.close(ws)
	n := int64(1<<20 + rand.IntN(8<<20))
	pause := s.newReadPause(ws)
	if err := ws.WriteMessage(websocket.BinaryMessage, binary.BigEndian.AppendUint64([]byte{'s'}, uint64(n))); err != nil {
		return s.commandFailed(ws, err)
	}
	var off int64
	want := make([]byte, 64<<10)
	for {
		_, r, err := ws.NextReader()
		if err != nil {
			if closeCode(err) != websocket.CloseNormalClosure {
				return fmt.Errorf("after %d of %d bytes: %w", off, n, pause.explain(err))
			}
			break
		}
		got, err := io.ReadAll(r)
		pause.read()
		if err != nil {
			return pause.explain(err)
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

// readPause follows a browser of the soak between the reads it completes:
// on a saturated machine its own goroutine may wait seconds for a CPU,
// and a browser that takes nothing for two ping intervals while bytes wait
// for it is dropped as documented.
type readPause struct {
	mu     sync.Mutex
	client string
	began  time.Time // the console's open
	at     time.Time // the last read completed (or the reading began)
	long   []pause   // the pauses of two ping intervals or more
	pongs  *pongs    // a pong answered is no silence either
}

// pause is a time in which a browser of the soak completed no read.
type pause struct{ from, to time.Time }

func (s *soak) newReadPause(ws *websocket.Conn) *readPause {
	p := &readPause{client: ws.LocalAddr().String(), began: s.began(ws), at: time.Now()}
	if pp, ok := s.ponged.Load(ws); ok {
		p.pongs = pp.(*pongs)
	}
	return p
}

// read notes a read completed, or failed, now.
func (p *readPause) read() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.at) >= 2*soakPing {
		p.long = append(p.long, pause{p.at, now})
	}
	p.at = now
}

func (p *readPause) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var longest time.Duration
	for _, l := range p.long {
		longest = max(longest, l.to.Sub(l.from))
	}
	return fmt.Sprintf("%d pauses of two ping intervals or more between reads, the longest %v", len(p.long), longest.Round(time.Millisecond))
}

// pausedDrop: the soak's browser completed no read for two ping
// intervals, and its connection was dropped. That is the documented end
// of a browser that takes nothing (and answers no ping) for that long, if
// the proxy ended the console within such a pause, at least two intervals
// into it: its log tells, once the soak is over (stallEnds). A pause alone
// proves nothing: a browser waiting in a read for bytes that do not come
// pauses as long.
type pausedDrop struct {
	client string
	began  time.Time // the console's open
	long   []pause
	err    error
}

func (e *pausedDrop) Error() string { return e.err.Error() }
func (e *pausedDrop) Unwrap() error { return e.err }

// explains tells whether the proxy's end of a console, logged at ended,
// of a console it started at started, is one the pauses explain.
func (e *pausedDrop) explains(started, ended time.Time) bool {
	if started.Before(e.began) {
		return false // an earlier console from the same address
	}
	for _, l := range e.long {
		from := l.from
		if started.After(from) {
			from = started
		}
		// The proxy logs the end once both its pumps have returned,
		// which on a saturated machine can be seconds after the drop;
		// the browser finds the drop at its next read, which ends the
		// pause, or reads what its kernel held first. So the pause must
		// begin two intervals before the log line, and end at most two
		// intervals before it.
		if ended.Sub(from) >= 2*soakPing && !l.to.Before(ended.Add(-2*soakPing)) {
			return true
		}
	}
	return false
}

// explain adds the browser's pauses to err, the error that ended its
// reading.
func (p *readPause) explain(err error) error {
	p.read()
	var ce *websocket.CloseError
	dropped := errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.As(err, &ce) && ce.Code == websocket.CloseAbnormalClosure
	werr := fmt.Errorf("%v: %w", p, err)
	p.mu.Lock()
	defer p.mu.Unlock()
	long := p.long
	if p.pongs != nil {
		p.pongs.mu.Lock()
		long = splitAt(long, p.pongs.at)
		p.pongs.mu.Unlock()
	}
	if dropped && len(long) > 0 {
		return &pausedDrop{client: p.client, began: p.began, long: long, err: werr}
	}
	return werr
}

// splitAt splits pauses at the given times (pongs answered within them),
// keeping the parts of two ping intervals or more.
func splitAt(long []pause, at []time.Time) []pause {
	at = slices.Clone(at)
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	var out []pause
	for _, l := range long {
		from := l.from
		for _, t := range at {
			if t.After(from) && t.Before(l.to) {
				if t.Sub(from) >= 2*soakPing {
					out = append(out, pause{from, t})
				}
				from = t
			}
		}
		if l.to.Sub(from) >= 2*soakPing {
			out = append(out, pause{from, l.to})
		}
	}
	return out
}

// unread is how many bytes wait in c's socket for the browser to read
// them, or 0 where that cannot be told.
func unread(c net.Conn) int {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n
}

// pongs are the times a browser of the soak answered pings.
type pongs struct {
	mu sync.Mutex
	at []time.Time
}

func (p *pongs) add(t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.at = append(p.at, t)
}

// silentDrop explains the drop of a browser that waits for messages
// while the VNC server sends none: it answers pings, and nothing else, so
// it was silent between two pongs (or the greeting and a pong, or the last
// and the drop), which the proxy's log may show to be two intervals
// (stallEnds).
func (s *soak) silentDrop(ws *websocket.Conn, err error) error {
	if !(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)) {
		return err
	}
	at, ok := s.greeted.Load(ws)
	if !ok {
		return err
	}
	times := []time.Time{at.(time.Time)}
	if p, ok := s.ponged.Load(ws); ok {
		p := p.(*pongs)
		p.mu.Lock()
		times = append(times, p.at...)
		p.mu.Unlock()
	}
	times = append(times, time.Now())
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	var long []pause
	for i := 1; i < len(times); i++ {
		if times[i].Sub(times[i-1]) >= 2*soakPing {
			long = append(long, pause{times[i-1], times[i]})
		}
	}
	if len(long) == 0 {
		return err
	}
	return &pausedDrop{client: ws.LocalAddr().String(), began: s.began(ws), long: long,
		err: fmt.Errorf("%d silences of two ping intervals or more: %w", len(long), err)}
}

// began is when ws began to open.
func (s *soak) began(ws *websocket.Conn) time.Time {
	if at, ok := s.opened.Load(ws); ok {
		return at.(time.Time)
	}
	return time.Time{}
}

// commandFailed explains a command that could not be written after the
// greeting: the browser had read nothing since the greeting, so a
// dropped connection is the documented end of one that answered no ping
// for two intervals, as the proxy's log tells (stallEnds).
func (s *soak) commandFailed(ws *websocket.Conn, err error) error {
	at, ok := s.greeted.Load(ws)
	if !ok || !(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		return err
	}
	// The browser has read nothing but the greeting, and answered no
	// ping, since the console began.
	began := s.began(ws)
	return &pausedDrop{client: ws.LocalAddr().String(), began: began, long: []pause{{began, time.Now()}},
		err: fmt.Errorf("%v after the greeting: %w", time.Since(at.(time.Time)).Round(time.Millisecond), err)}
}

// stallEnds lists, by browser address, the consoles the proxy ended for a
// reason that lets it drop a browser that takes nothing for two ping
// intervals: the stall or ping check, or a close wait that ran out (any
// end with a close frame).
func stallEnds(log []byte) map[string][]loggedSession {
	type entry struct {
		Msg     string  `json:"msg"`
		TS      float64 `json:"ts"`
		Session string  `json:"session"`
		Client  string  `json:"client"`
		Reason  string  `json:"reason"`
	}
	started := map[string]time.Time{}
	ends := map[string][]loggedSession{}
	for _, line := range bytes.Split(log, []byte("\n")) {
		var e entry
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		at := time.Unix(0, int64(e.TS*1e9))
		switch {
		case e.Msg == "session started":
			started[e.Session] = at
		case e.Msg == "session ended" && e.Reason != "browser connection lost" && e.Reason != "internal error":
			ends[e.Client] = append(ends[e.Client], loggedSession{started[e.Session], at})
		}
	}
	return ends
}

// loggedSession is a console as the proxy's log has it.
type loggedSession struct{ started, ended time.Time }

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
		return s.commandFailed(ws, err)
	}
	if s.transport == "ws" {
		// The bound runs from when bytes wait for the browser and its
		// kernel takes no more: on a saturated machine the VNC server
		// stand-in may begin its stream seconds after the command, and
		// the kernel goes on taking bytes for a while into the window it
		// had offered before the buffer was made small.
		if err := awaitUnread(ws.UnderlyingConn(), 30*time.Second); err != nil {
			return fmt.Errorf("browser %v: %w", ws.LocalAddr(), err)
		}
	}
	time.Sleep(stallBound)
	if s.transport != "ws" {
		// The proxy must have reset the stream by now: what the stream
		// still holds reads at once, then the reset. A stream still
		// alive would go on delivering.
		_ = ws.SetReadDeadline(time.Now().Add(2 * time.Second))
		if err := readUntilClose(ws); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return fmt.Errorf("browser %v: still connected %v after it stopped reading", ws.LocalAddr(), stallBound)
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
			return fmt.Errorf("browser %v: the connection is neither reset nor readable", ws.LocalAddr())
		}
		return nil
	}
	return fmt.Errorf("browser %v: still connected %v after it stopped reading", ws.LocalAddr(), stallBound)
}

// awaitUnread waits until bytes wait in c's socket for the browser to
// read them and their count no longer grows (the socket takes no more),
// without reading any.
func awaitUnread(c net.Conn, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	last := 0
	for time.Now().Before(deadline) {
		n := unread(c)
		if n > 0 && n == last {
			return nil
		}
		last = n
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("bytes from the VNC server did not settle in %v", limit)
}

func soakBrowserVanishes(s *soak) error {
	ws, err := s.dial("normal", false)
	if err != nil {
		return err
	}
	pause := s.newReadPause(ws)
	if err := ws.WriteMessage(websocket.BinaryMessage, binary.BigEndian.AppendUint64([]byte{'s'}, 1<<40)); err != nil {
		err = s.commandFailed(ws, err)
		s.close(ws)
		return err
	}
	for range 1 + rand.IntN(20) {
		_, _, err := ws.ReadMessage()
		if err != nil {
			s.close(ws)
			return pause.explain(err)
		}
		pause.read()
	}
	return s.drop(ws)
}

func soakTargetVanishes(s *soak) (err error) {
	ws, err := s.dial(s.vanishing, false)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("browser %v: %w", ws.LocalAddr(), err)
		}
	}()
	defer s.close(ws)
	// The server resets within 3s, saying so first; the browser hears 1000
	// within a few seconds of that. The soak's server keeps time with the
	// soak's own timers, which a saturated machine makes late, so the
	// bound runs from its word rather than from the open.
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, m, err := ws.NextReader()
		if err != nil {
			if closeCode(err) != websocket.CloseNormalClosure {
				return s.silentDrop(ws, fmt.Errorf("the VNC server vanished and the browser got %w, want close 1000", err))
			}
			return nil
		}
		b, err := io.ReadAll(m)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(vanishWord)) {
			_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		}
	}
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
		return s.commandFailed(ws, err)
	}
	r := &closeReader{done: make(chan error, 1), pause: s.newReadPause(ws), conn: ws.UnderlyingConn()}
	r.lastRead.Store(time.Now().UnixNano())
	go r.run(ws)
	time.Sleep(time.Duration(rand.Int64N(int64(pause))))
	act(ws)
	if err := r.await(code); err != nil {
		return fmt.Errorf("browser %v: %w", ws.LocalAddr(), err)
	}
	return nil
}

// closeReader reads a console until its close frame, noting when it last
// read anything.
type closeReader struct {
	done     chan error
	lastRead atomic.Int64 // Unix nanoseconds
	read     atomic.Int64 // bytes
	pause    *readPause
	conn     net.Conn
}

func (r *closeReader) run(ws *websocket.Conn) {
	// await bounds the wait, by progress rather than from the open.
	_ = ws.SetReadDeadline(time.Time{})
	r.done <- func() error {
		for {
			_, m, err := ws.NextReader()
			if err != nil {
				if closeCode(err) > 0 && closeCode(err) != websocket.CloseAbnormalClosure {
					return err
				}
				return r.pause.explain(err)
			}
			n, err := io.Copy(io.Discard, m)
			r.read.Add(n)
			r.lastRead.Store(time.Now().UnixNano())
			r.pause.read()
			if err != nil {
				return r.pause.explain(err)
			}
		}
	}()
}

// closeQuiet and closeLimit bound the wait for a close frame: it comes
// after the data frame in flight and after the bytes queued before it,
// which a browser that a saturated machine holds up reads for a while. So
// the wait is for 10s without a byte, and a minute at most (the bytes
// queued are what the sockets between hold: the proxy relays no more once
// the console has ended).
const (
	closeQuiet = 10 * time.Second
	closeLimit = time.Minute
)

// await waits for the close frame with code.
func (r *closeReader) await(code int) error {
	start := time.Now()
	check := time.NewTicker(100 * time.Millisecond)
	defer check.Stop()
	for {
		select {
		case err := <-r.done:
			if closeCode(err) != code {
				return fmt.Errorf("got %w, want close %d", err, code)
			}
			return nil
		case <-check.C:
		}
		last := time.Unix(0, r.lastRead.Load())
		if last.Before(start) {
			last = start // the act itself may take seconds
		}
		quiet := time.Since(last)
		if quiet >= closeQuiet && unread(r.conn) > 0 {
			// Bytes have come, and wait for the soak's own reader,
			// which the saturated machine holds up.
			r.lastRead.Store(time.Now().UnixNano())
			continue
		}
		if quiet >= closeQuiet || time.Since(start) >= closeLimit {
			return fmt.Errorf("no close %d: %d bytes read in %v, the last %v ago", code, r.read.Load(), time.Since(start).Round(time.Millisecond), quiet.Round(time.Millisecond))
		}
	}
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
		// Without a deadline: the soak's own goroutine, held up on a
		// saturated machine, must not give up the close it means to send.
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"), time.Time{})
	}, 4001)
}

// vanishWord is what the vanishing VNC server stand-in sends just before it
// resets its connection.
const vanishWord = "vanishing now"

// startVanishingTarget is a VNC server stand-in that greets, echoes, and
// resets each connection 0.5 to 3 seconds after it opened, having said so
// (vanishWord) just before.
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
					_, _ = io.WriteString(c, vanishWord)
					// What was written goes before the reset.
					time.Sleep(20 * time.Millisecond)
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
	resp, err := adminClient.Get("http://" + admin + "/debug/pprof/goroutine?debug=1")
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

// tcpExt reads the machine's TcpExt counters (/proc/net/netstat), or nil.
func tcpExt() map[string]int64 {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return nil
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		m := map[string]int64{}
		for i, v := range f[1:] {
			if i < len(names) {
				m[names[i]], _ = strconv.ParseInt(v, 10, 64)
			}
		}
		return m
	}
	return nil
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
