package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// TestMetricsOnAdmin: the real binary serves the handler's metrics on
// Caddy's admin endpoint (/metrics), with no `metrics` option, labelled
// with the server's name.
func TestMetricsOnAdmin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	addr, _ := startVNCDemo(t)
	dir := t.TempDir()
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	site, _ := startCaddyProcessAdmin(t, dir, admin, fmt.Sprintf("vnc_proxy /websockify {\n\t\tresolver file %s\n\t\tmax_sessions_per_token 1\n\t}",
		writeTokenFile(t, dir, secretToken+": "+addr, "bad line")))
	stream, _ := rfbThroughProxy(t, "ws://"+site+"/websockify?token="+secretToken)
	defer stream.Conn.Close()
	if _, status, _ := dialWS(t, "ws://"+site+"/websockify?token=unknown", nil); status != http.StatusForbidden {
		t.Fatalf("unknown token: %d", status)
	}
	if _, status, _ := dialWS(t, "ws://"+site+"/websockify?token="+secretToken, nil); status != http.StatusTooManyRequests {
		t.Fatalf("a second console of the token: %d", status)
	}

	var metrics string
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics = string(b)
		if strings.Contains(metrics, `caddy_vnc_proxy_sessions_active{server="srv0"} 1`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{
		`caddy_vnc_proxy_requests_total{result="started",server="srv0"} 1`,
		`caddy_vnc_proxy_requests_total{result="token_refused",server="srv0"} 1`,
		`caddy_vnc_proxy_requests_total{result="too_many_for_token",server="srv0"} 1`,
		`caddy_vnc_proxy_sessions_active{server="srv0"} 1`,
		`caddy_vnc_proxy_bytes_total{direction="to_browser",server="srv0"}`,
		`caddy_vnc_proxy_resolve_duration_seconds_count{server="srv0"} 2`,
		`caddy_vnc_proxy_token_file_skipped_lines{path=`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(metrics, secretToken) {
		t.Error("/metrics contains a token")
	}
}
