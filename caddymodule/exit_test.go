package caddymodule

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

func TestCheckUpgradeRequest(t *testing.T) {
	upgrade := func(method string, edit func(h http.Header)) *http.Request {
		r := httptest.NewRequest(method, "/websockify?token=x", nil)
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "websocket")
		r.Header.Set("Sec-WebSocket-Version", "13")
		r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		if edit != nil {
			edit(r.Header)
		}
		return r
	}
	cases := []struct {
		name string
		req  *http.Request
		ok   bool
	}{
		{"upgrade", upgrade(http.MethodGet, nil), true},
		{"extended CONNECT (HTTP/2, HTTP/3)", upgrade(http.MethodConnect, nil), false},
		{"POST", upgrade(http.MethodPost, nil), false},
		{"plain GET", httptest.NewRequest(http.MethodGet, "/websockify", nil), false},
		{"no key", upgrade(http.MethodGet, func(h http.Header) { h.Del("Sec-WebSocket-Key") }), false},
		{"old version", upgrade(http.MethodGet, func(h http.Header) { h.Set("Sec-WebSocket-Version", "8") }), false},
		{"upgrade to h2c", upgrade(http.MethodGet, func(h http.Header) { h.Set("Upgrade", "h2c") }), false},
	}
	for _, c := range cases {
		if err := checkUpgradeRequest(c.req); (err == nil) != c.ok {
			t.Errorf("%s: error %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

// TestExitClosesSessions runs the real Caddy binary and stops it with
// SIGTERM: live consoles get close code 1001.
func TestExitClosesSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	goBin := testenv.Require(t, "go", "golang")
	dir := t.TempDir()
	caddyBin := filepath.Join(dir, "caddy")
	build := exec.Command(goBin, "build", "-o", caddyBin, "../cmd/caddy")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cmd/caddy: %v\n%s", err, out)
	}

	addr, _ := startLoadTarget(t)
	tokens := writeTokenFile(t, dir, secretToken+": "+addr)
	port := testenv.FreePort(t)
	cf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cf, []byte(fmt.Sprintf(`{
	admin off
	skip_install_trust
	storage file_system %s/storage
}

http://127.0.0.1:%d {
	vnc_proxy /websockify {
		resolver file %s
	}
}
`, dir, port, tokens)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	proc := testenv.Start(t, caddyBin, "run", "--config", cf, "--adapter", "caddyfile")
	siteAddr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := testenv.WaitDial("tcp", siteAddr, 15*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, proc.Output())
	}

	ws := mustDialWS(t, "ws://"+siteAddr+"/websockify?token="+secretToken)
	if _, msg, err := ws.ReadMessage(); err != nil || len(msg) != 12 {
		t.Fatalf("greeting %q, %v", msg, err)
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte{'i'}); err != nil {
		t.Fatal(err)
	}
	if err := proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expectClose(t, ws, websocket.CloseGoingAway)
	select {
	case <-proc.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("caddy did not exit after SIGTERM\n%s", proc.Output())
	}
}
