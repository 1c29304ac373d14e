package caddymodule

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func TestParseTargetRule(t *testing.T) {
	cases := []struct {
		in   string
		addr string // an address to check, ip:port
		name string
		ok   bool
	}{
		{"10.0.0.0/8", "10.1.2.3:5900", "", true},
		{"10.0.0.0/8", "11.0.0.1:5900", "", false},
		{"10.0.0.0/8:5900-5999", "10.1.2.3:5999", "", true},
		{"10.0.0.0/8:5900-5999", "10.1.2.3:6379", "", false},
		{"192.0.2.7:5901", "192.0.2.7:5901", "", true},
		{"192.0.2.7:5901", "192.0.2.7:5902", "", false},
		{"192.0.2.7", "[::ffff:192.0.2.7]:5900", "", true}, // IPv4-mapped
		{"fd00::/8", "[fd12::5]:5900", "", true},
		{"[fd00::/8]:5900-5910", "[fd12::5]:5911", "", false},
		{"[fe80::1]:5900", "[fe80::1%eth0]:5900", "", true}, // zone ignored
		{"compute-1.internal:5900-5999", "10.9.9.9:5901", "Compute-1.Internal", true},
		{"compute-1.internal:5900-5999", "10.9.9.9:5901", "compute-2.internal", false},
	}
	for _, c := range cases {
		r, err := parseTargetRule(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if got := (targetPolicy{r}).allowsAddress(c.name, netip.MustParseAddrPort(c.addr)); got != c.ok {
			t.Errorf("%s allows %s (name %q): %v, want %v", c.in, c.addr, c.name, got, c.ok)
		}
	}
	for _, bad := range []string{"10.0.0.0/8:0", "10.0.0.0/8:6000-5900", "h:70000", "unix:relative/", "[fd00::1", "fe80::1%eth0", "a b", "ftp://x"} {
		if _, err := parseTargetRule(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	unix, _ := parseTargetRule("unix:/run/vnc")
	for path, ok := range map[string]bool{
		"/run/vnc/vm1.sock":        true,
		"/run/vnc/../docker.sock":  false,
		"/run/vncevil/vm1.sock":    false,
		"/run/vnc/sub/../vm2.sock": true,
	} {
		if got := (targetPolicy{unix}).allowsUnix(path); got != ok {
			t.Errorf("unix:/run/vnc allows %s: %v, want %v", path, got, ok)
		}
	}
}

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
