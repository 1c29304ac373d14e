package caddymodule

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/gorilla/websocket"

	// The standard modules, as in cmd/caddy.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/internal/vncdemo"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsconnect"
)

// testCaddy is a Caddy running in this test process with a config made
// from a Caddyfile: access log and the process log go to files in a
// temporary directory, so tests can read them.
type testCaddy struct {
	t       testing.TB
	dir     string
	port    int
	addr    string // 127.0.0.1:port
	logFile string
	// transport is how the tests' browsers reach the site: "ws"
	// (HTTP/1.1 upgrade, plain HTTP), or over HTTPS with Caddy's default
	// protocols, "h2" (RFC 8441) or "h3" (RFC 9220).
	transport string
	// servers holds more lines of the global servers option.
	servers string
	// moreSites are site blocks after the test site, each a server of its
	// own on another port (loadSites).
	moreSites string
}

// TestMain runs the tests with Go's HTTP/2 server offering extended
// CONNECT, which it reads from GODEBUG once, as the process starts; so the
// test binary starts itself again with the setting when it is not there.
func TestMain(m *testing.M) {
	if godebug := os.Getenv("GODEBUG"); !strings.Contains(godebug, "http2xconnect=1") {
		if godebug != "" {
			godebug += ","
		}
		env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") })
		env = append(env, "GODEBUG="+godebug+"http2xconnect=1")
		if err := syscall.Exec(os.Args[0], os.Args, env); err != nil {
			fmt.Fprintf(os.Stderr, "starting the tests with GODEBUG=http2xconnect=1: %v\n", err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}

// transports are the ways a browser opens a console, for tests that run
// over each.
var transports = []string{"ws", "h2", "h3"}

// forEachTransport runs test once over each transport.
func forEachTransport(t *testing.T, test func(t *testing.T, transport string)) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { test(t, tr) })
	}
}

// startCaddy runs Caddy with the site body (the lines inside the site
// block) on a free port. The site's access log is on, as in production.
func startCaddy(t testing.TB, siteBody string) *testCaddy {
	t.Helper()
	return startCaddyOver(t, "ws", siteBody)
}

// startCaddyOver is startCaddy for browsers on transport: plain HTTP for
// "ws", HTTPS (tls internal, every protocol) for "wss", "h2" and "h3".
func startCaddyOver(t testing.TB, transport, siteBody string) *testCaddy {
	t.Helper()
	return startCaddyServers(t, transport, "", siteBody)
}

// startCaddyServers is startCaddyOver with more lines for the global
// servers option, such as timeouts.
func startCaddyServers(t testing.TB, transport, servers, siteBody string) *testCaddy {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	tc := &testCaddy{t: t, dir: dir, port: testenv.FreePort(t), logFile: filepath.Join(dir, "caddy.log"), transport: transport, servers: servers}
	tc.addr = fmt.Sprintf("127.0.0.1:%d", tc.port)
	tc.load(siteBody)
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
	return tc
}

// loadSites is load with more site blocks after the test site.
func (tc *testCaddy) loadSites(siteBody, moreSites string) {
	tc.t.Helper()
	tc.moreSites = moreSites
	tc.load(siteBody)
}

// load replaces the running config with one whose site has siteBody: a
// config reload.
func (tc *testCaddy) load(siteBody string) {
	tc.t.Helper()
	site, tlsOptions := fmt.Sprintf("http://127.0.0.1:%d", tc.port), "auto_https off"
	if tc.transport != "ws" {
		site = fmt.Sprintf("https://127.0.0.1:%d", tc.port)
		tlsOptions = "auto_https disable_redirects\n\tlocal_certs"
	}
	cf := fmt.Sprintf(`{
	admin off
	skip_install_trust
	%[5]s
	storage file_system %[1]s/storage
	servers {
		# Tests act as many clients through X-Forwarded-For.
		trusted_proxies static 127.0.0.1/32
		%[6]s
	}
	log {
		output file %[2]s
		format json
		level DEBUG
	}
}

%[3]s {
	log {
		output file %[1]s/access.log
		format filter {
			wrap json
			request>uri query {
				delete token
			}
			request>headers>Referer delete
		}
	}
	%[4]s
}

%[7]s
`, tc.dir, tc.logFile, site, siteBody, tlsOptions, tc.servers, tc.moreSites)
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfg, warnings, err := adapter.Adapt([]byte(cf), nil)
	if err != nil {
		tc.t.Fatalf("adapting Caddyfile: %v\n%s", err, cf)
	}
	for _, w := range warnings {
		if !strings.Contains(w.Message, "not formatted") {
			tc.t.Errorf("Caddyfile warning: %s", w)
		}
	}
	if err := caddy.Load(cfg, true); err != nil {
		tc.t.Fatalf("loading config: %v\n%s", err, cfg)
	}
	if err := testenv.WaitDial("tcp", tc.addr, 5*time.Second); err != nil {
		tc.t.Fatal(err)
	}
	if tc.transport != "ws" {
		// The site's certificate is issued in the background.
		client := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		defer client.CloseIdleConnections()
		waitFor(tc.t, 10*time.Second, "the site's certificate", func() bool {
			resp, err := client.Get("https://" + tc.addr + "/")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil
		})
	}
}

// url returns the URL of path on the test site, as dialWS takes it: ws://
// and wss:// for an HTTP/1.1 upgrade, h2:// and h3:// for extended CONNECT
// over HTTPS.
func (tc *testCaddy) url(path string) string {
	return tc.transport + "://" + tc.addr + path
}

// httpURL is the site's http:// or https:// URL of path, for plain HTTP
// requests.
func (tc *testCaddy) httpURL(path string) string {
	if tc.transport == "ws" {
		return "http://" + tc.addr + path
	}
	return "https://" + tc.addr + path
}

// httpClient is a client for httpURL that trusts the site's certificate.
func (tc *testCaddy) httpClient() *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	tc.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// logs returns everything Caddy logged so far: the process log and the
// access log.
func (tc *testCaddy) logs() string {
	a, _ := os.ReadFile(tc.logFile)
	b, _ := os.ReadFile(filepath.Join(tc.dir, "access.log"))
	return string(a) + string(b)
}

// dialWS opens a WebSocket to the proxy; on a refused handshake it returns
// the HTTP status and body.
func dialWS(t testing.TB, url string, header http.Header) (*websocket.Conn, int, string) {
	t.Helper()
	var (
		ws   *websocket.Conn
		resp *http.Response
		err  error
	)
	switch scheme, rest, _ := strings.Cut(url, "://"); scheme {
	case "h2", "h3":
		ws, resp, err = dialStream(t, scheme, "https://"+rest, header)
	default:
		// ws://, or wss:// (HTTP/1.1 over TLS, as browsers open consoles).
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		ws, resp, err = d.Dial(url, header)
	}
	if err != nil {
		if resp == nil {
			t.Fatalf("dialing %s: %v", url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, resp.StatusCode, string(body)
	}
	t.Cleanup(func() { ws.Close() })
	return ws, http.StatusSwitchingProtocols, ""
}

// dialStream opens a WebSocket over HTTP/2 or HTTP/3, on a connection of
// its own, closed when the test ends.
func dialStream(t testing.TB, proto, url string, header http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tlsConf := &tls.Config{InsecureSkipVerify: true}
	if proto == "h2" {
		d := wsconnect.NewH2(tlsConf)
		t.Cleanup(d.Transport.CloseIdleConnections)
		return d.Dial(ctx, url, header)
	}
	host := strings.SplitN(strings.TrimPrefix(url, "https://"), "/", 2)[0]
	d, err := wsconnect.DialH3(ctx, host, tlsConf)
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { d.Close() })
	return d.Dial(ctx, url, header)
}

// mustDialWS opens a WebSocket that the proxy must accept.
func mustDialWS(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	ws, status, body := dialWS(t, url, nil)
	if ws == nil {
		t.Fatalf("dialing %s: status %d: %s", url, status, body)
	}
	return ws
}

// smallWindowDialer dials WebSockets with a receive buffer of size bytes:
// a browser that stops reading fills it at once, one that reads slowly is
// slow.
func smallWindowDialer(size int) *websocket.Dialer {
	return &websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		NetDial: func(network, addr string) (net.Conn, error) {
			c, err := net.Dial(network, addr)
			if err == nil {
				_ = c.(*net.TCPConn).SetReadBuffer(size)
			}
			return c, err
		},
	}
}

// writeTokenFile writes a websockify token file and returns its path.
func writeTokenFile(t testing.TB, dir string, lines ...string) string {
	t.Helper()
	path := filepath.Join(dir, "vnc-tokens")
	writeFileAtomic(t, path, strings.Join(lines, "\n")+"\n")
	return path
}

// writeFileAtomic replaces path's content the way editors and config
// managers do: write a temporary file, then rename it over.
func writeFileAtomic(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startLoadTarget runs a loadtarget server on a free port.
func startLoadTarget(t testing.TB) (addr string, srv *loadtarget.Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv = &loadtarget.Server{}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), srv
}

// startVNCDemo runs the demo VNC server in-process on a free port.
func startVNCDemo(t testing.TB) (addr string, srv *vncdemo.Server) {
	t.Helper()
	srv = &vncdemo.Server{}
	return startVNCDemoWith(t, srv), srv
}

// startVNCDemoWith runs a configured demo VNC server on a free port.
func startVNCDemoWith(t testing.TB, srv *vncdemo.Server) string {
	t.Helper()
	l := listenLoopback(t)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// listenLoopback listens on a free port of 127.0.0.1 until the test ends.
func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSessionGoroutines fails the test unless, within a few seconds, no
// goroutine runs session or handler code any more. (Caddy's own background
// goroutines come and go, so counting all of them would not tell.)
func waitSessionGoroutines(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 4<<20)
	for {
		stacks := string(buf[:runtime.Stack(buf, true)])
		var left []string
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "console.(*Session)") || strings.Contains(g, "caddymodule.(*Handler).ServeHTTP") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of sessions are left:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
