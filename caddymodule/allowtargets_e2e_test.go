package caddymodule

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestAllowTargets: a target outside allow_targets is a 403 and is never
// dialed, whatever name or form the token gives it.
func TestAllowTargets(t *testing.T) {
	vnc, _ := startVNCDemo(t)
	_, vncPort, _ := net.SplitHostPort(vnc)
	// A service the tokens must not reach, counting connections.
	forbidden := listenLoopback(t)
	var dialed atomic.Int32
	go func() {
		for {
			c, err := forbidden.Accept()
			if err != nil {
				return
			}
			dialed.Add(1)
			c.Close()
		}
	}()
	_, forbiddenPort, _ := net.SplitHostPort(forbidden.Addr().String())
	sockDir := t.TempDir()
	tokens := writeTokenFile(t, t.TempDir(),
		"ok: "+vnc,
		"mapped: [::ffff:127.0.0.1]:"+vncPort,
		"otherport: 127.0.0.1:"+forbiddenPort,
		"byname: localhost:"+forbiddenPort,
		"escape: unix:"+filepath.Join(sockDir, "..", "other.sock"))
	tc := startCaddy(t, fileSite(tokens, fmt.Sprintf("allow_targets 127.0.0.1:%s unix:%s/", vncPort, sockDir)))

	for token, want := range map[string]int{
		"ok":        http.StatusSwitchingProtocols,
		"mapped":    http.StatusSwitchingProtocols,
		"otherport": http.StatusForbidden,
		"byname":    http.StatusForbidden, // localhost resolves to 127.0.0.1, on a port not listed
		"escape":    http.StatusForbidden,
	} {
		ws, status, body := dialWS(t, tc.url("/websockify?token="+token), nil)
		if ws != nil {
			ws.Close()
		}
		if status != want {
			t.Errorf("token %s: status %d, want %d", token, status, want)
		}
		if status == http.StatusForbidden && body != "target not allowed\n" {
			t.Errorf("token %s: body %q", token, body)
		}
	}
	if n := dialed.Load(); n != 0 {
		t.Errorf("the forbidden service was connected to %d times", n)
	}
	if !strings.Contains(tc.logs(), `"result":"target_refused"`) && !strings.Contains(tc.logs(), "target not allowed") {
		t.Errorf("no log line for the refusals:\n%s", tc.logs())
	}

	// By name: the name itself is trusted, and the port still checked.
	tc.load(fileSite(tokens, "allow_targets localhost:"+vncPort))
	ws, status, _ := dialWS(t, tc.url("/websockify?token=ok"), nil)
	if ws != nil {
		ws.Close()
	}
	if status != http.StatusForbidden {
		t.Errorf("an IP target with only a name listed: status %d, want 403", status)
	}
}
