package caddymodule

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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
}

// startCaddy runs Caddy with the site body (the lines inside the site
// block) on a free port. The site's access log is on, as in production.
func startCaddy(t testing.TB, siteBody string) *testCaddy {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	tc := &testCaddy{t: t, dir: dir, port: testenv.FreePort(t), logFile: filepath.Join(dir, "caddy.log")}
	tc.addr = fmt.Sprintf("127.0.0.1:%d", tc.port)
	tc.load(siteBody)
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
	return tc
}

// load replaces the running config with one whose site has siteBody: a
// config reload.
func (tc *testCaddy) load(siteBody string) {
	tc.t.Helper()
	cf := fmt.Sprintf(`{
	admin off
	skip_install_trust
	auto_https off
	storage file_system %[1]s/storage
	servers {
		# Tests act as many clients through X-Forwarded-For.
		trusted_proxies static 127.0.0.1/32
	}
	log {
		output file %[2]s
		format json
		level DEBUG
	}
}

http://127.0.0.1:%[3]d {
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
`, tc.dir, tc.logFile, tc.port, siteBody)
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
}

// url returns the ws:// URL of path on the test site.
func (tc *testCaddy) url(path string) string {
	return "ws://" + tc.addr + path
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
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(url, header)
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
			if strings.Contains(g, "caddymodule.(*session)") || strings.Contains(g, "caddymodule.(*Handler).ServeHTTP") {
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
