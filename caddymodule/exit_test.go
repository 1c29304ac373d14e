package caddymodule

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
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
	extended := func(major int, protocol, version string) *http.Request {
		r := httptest.NewRequest(http.MethodConnect, "/websockify?token=x", nil)
		r.ProtoMajor = major
		if major == 2 && protocol != "" {
			r.Header.Set(":protocol", protocol)
		}
		if major == 3 && protocol != "" {
			r.Proto = protocol
		}
		r.Header.Set("Sec-WebSocket-Version", version)
		return r
	}
	cases := []struct {
		name string
		req  *http.Request
		ok   bool
	}{
		{"upgrade", upgrade(http.MethodGet, nil), true},
		{"CONNECT over HTTP/1.1", upgrade(http.MethodConnect, nil), false},
		{"extended CONNECT, HTTP/2", extended(2, "websocket", "13"), true},
		{"extended CONNECT, HTTP/3", extended(3, "websocket", "13"), true},
		{"extended CONNECT, other protocol", extended(2, "webtransport", "13"), false},
		{"extended CONNECT, old version", extended(3, "websocket", "8"), false},
		{"plain CONNECT, HTTP/2", extended(2, "", "13"), false},
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
	addr, _ := startLoadTarget(t)
	dir := t.TempDir()
	siteAddr, proc := startCaddyProcess(t, dir, fmt.Sprintf("vnc_proxy /websockify {\n\t\tresolver file %s\n\t}",
		writeTokenFile(t, dir, secretToken+": "+addr)))

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
