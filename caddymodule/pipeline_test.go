package caddymodule

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// TestCountsPerServer: two sites (two Caddy servers) with a vnc_proxy
// each, max_sessions 1 on both, count apart: each opens its console. A
// reload keeps each handler's count, so a second console on either is
// still refused while the first lives, and opens once it has ended.
func TestCountsPerServer(t *testing.T) {
	addr, _ := startVNCDemo(t)
	tokens := writeTokenFile(t, t.TempDir(), secretToken+": "+addr)
	port2 := testenv.FreePort(t)
	other := func(comment string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\t# %s\n\t%s\n}", port2, comment, fileSite(tokens, "max_sessions 1"))
	}
	tc := startCaddy(t, "")
	tc.loadSites(fileSite(tokens, "max_sessions 1"), other("first"))
	if err := testenv.WaitDial("tcp", fmt.Sprintf("127.0.0.1:%d", port2), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	urlA := tc.url("/websockify?token=" + secretToken)
	urlB := fmt.Sprintf("ws://127.0.0.1:%d/websockify?token=%s", port2, secretToken)

	wsA := mustDialWS(t, urlA)
	wsB := mustDialWS(t, urlB)

	tc.loadSites(fileSite(tokens, "max_sessions 1"), other("reloaded"))
	for _, url := range []string{urlA, urlB} {
		if ws, status, _ := dialWS(t, url, nil); ws != nil || status != http.StatusServiceUnavailable {
			t.Fatalf("%s after the reload: status %d, want 503 while the old config's console lives", url, status)
		}
	}
	wsA.Close()
	waitFor(t, 10*time.Second, "site A's console to open again", func() bool {
		ws, _, _ := dialWS(t, urlA, nil)
		if ws != nil {
			ws.Close()
		}
		return ws != nil
	})
	wsB.Close()
}

// TestFailedTokenTableKeptOnReload: a client over its failed_token_rate
// stays over it across a reload, also when the reload changes the rate.
func TestFailedTokenTableKeptOnReload(t *testing.T) {
	addr, _ := startVNCDemo(t)
	tokens := writeTokenFile(t, t.TempDir(), secretToken+": "+addr)
	tc := startCaddy(t, fileSite(tokens, "failed_token_rate 2/1h"))
	status := func(token string) int {
		t.Helper()
		ws, status, _ := dialWS(t, tc.url("/websockify?token="+token), http.Header{"X-Forwarded-For": {"198.51.100.7"}})
		if ws != nil {
			ws.Close()
		}
		return status
	}
	for range 2 {
		if got := status("wrong"); got != http.StatusForbidden {
			t.Fatalf("a wrong token: %d, want 403", got)
		}
	}
	if got := status(secretToken); got != http.StatusTooManyRequests {
		t.Fatalf("over the rate: %d, want 429", got)
	}
	tc.load(fileSite(tokens, "failed_token_rate 3/1h"))
	if got := status(secretToken); got != http.StatusTooManyRequests {
		t.Fatalf("over the rate after a reload that changed it: %d, want 429", got)
	}
}

// TestHandleErrorsShapesRefusal: where the server has handle_errors
// routes, a refusal reaches them with its status (a Retry-After set
// first); without them the body is the short reason.
func TestHandleErrorsShapesRefusal(t *testing.T) {
	addr, _ := startVNCDemo(t)
	tokens := writeTokenFile(t, t.TempDir(), secretToken+": "+addr)
	tc := startCaddy(t, fileSite(tokens, "max_sessions 1")+`
	handle_errors {
		respond "console error {err.status_code}" {err.status_code}
	}`)
	if _, status, body := dialWS(t, tc.url("/websockify?token=wrong"), nil); status != http.StatusForbidden || body != "console error 403" {
		t.Fatalf("refused with %d %q, want 403 from handle_errors", status, body)
	}
	mustDialWS(t, tc.url("/websockify?token="+secretToken))
	req, _ := http.NewRequest(http.MethodGet, tc.httpURL("/websockify?token="+secretToken), nil)
	for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} {
		req.Header.Set(k, v)
	}
	resp, err := tc.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || string(body) != "console error 503" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over max_sessions: %d %q Retry-After %q, want 503 from handle_errors with Retry-After", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}

	tc.load(fileSite(tokens))
	if _, status, body := dialWS(t, tc.url("/websockify?token=wrong"), nil); status != http.StatusForbidden || body != "invalid or expired token\n" {
		t.Fatalf("without handle_errors: %d %q, want 403 with the short reason", status, body)
	}
}

// TestAccessLogRecordsUpgrade: the access log shows a console's request
// with status 101, as it does for reverse_proxy's WebSockets.
func TestAccessLogRecordsUpgrade(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		addr, _ := startVNCDemo(t)
		tc := startCaddyOver(t, transport, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr)))
		ws := mustDialWS(t, tc.url("/websockify?token="+secretToken))
		want := `"status":101`
		if transport != "ws" {
			want = `"status":200`
		}
		if transport == "ws" {
			// Over HTTP/1.1 the request is logged when the handler returns,
			// which is right after the upgrade.
			waitFor(t, 10*time.Second, "the access log line", func() bool { return strings.Contains(tc.logs(), `"uri":"/websockify`) })
		} else {
			// A stream console's request lasts as long as the console.
			ws.Close()
			waitFor(t, 10*time.Second, "the access log line", func() bool { return strings.Contains(tc.logs(), `"uri":"/websockify`) })
		}
		var line string
		for _, l := range strings.Split(tc.logs(), "\n") {
			if strings.Contains(l, `"uri":"/websockify`) {
				line = l
			}
		}
		if !strings.Contains(line, want) {
			t.Fatalf("access log line %s lacks %s", line, want)
		}
		if strings.Contains(line, secretToken) {
			t.Fatal("the access log holds the token")
		}
	})
}

// TestLiteralSecretWarning: a secret written in the config as is gets a
// warning naming the option and the placeholder to use, never the value;
// one from {env.*} gets none.
func TestLiteralSecretWarning(t *testing.T) {
	const secret = "hunter2-literal"
	t.Setenv("VNC_TEST_PASSWORD", secret)
	addr, _ := startVNCDemo(t)
	tokens := writeTokenFile(t, t.TempDir(), secretToken+": "+addr)
	tc := startCaddy(t, fileSite(tokens, "vnc_auth {\n\t\t\t\tpassword {env.VNC_TEST_PASSWORD}\n\t\t\t}"))
	if strings.Contains(tc.logs(), "written literally") {
		t.Fatal("a warning for a password from {env.*}")
	}
	tc.load(fileSite(tokens, "vnc_auth {\n\t\t\t\tpassword "+secret+"\n\t\t\t}"))
	logs := tc.logs()
	if !strings.Contains(logs, "a secret is written literally") || !strings.Contains(logs, `"option":"vnc_auth password"`) || !strings.Contains(logs, "{env.VNC_PASSWORD}") {
		t.Fatalf("no warning naming the option and the placeholder:\n%s", logs)
	}
	// Caddy's own DEBUG "adjusted config" line holds it, which is what the
	// warning is about; the warning itself must not.
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "written literally") && strings.Contains(l, secret) {
			t.Fatalf("the warning holds the secret: %s", l)
		}
	}
}

// TestEarlyFrameAfterUpgrade: over HTTP/1.1 the 101 goes out before the
// connection is hijacked, so a client may send its first message at once,
// even in the same packet as its request; those bytes reach the target.
func TestEarlyFrameAfterUpgrade(t *testing.T) {
	ln := listenLoopback(t)
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 5)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.ReadFull(c, buf)
		got <- buf
	}()
	tokens := writeTokenFile(t, t.TempDir(), secretToken+": "+ln.Addr().String())
	tc := startCaddy(t, fileSite(tokens, "protocol raw"))

	c, err := net.Dial("tcp", tc.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	request := "GET /websockify?token=" + secretToken + " HTTP/1.1\r\nHost: " + tc.addr +
		"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	// A masked binary frame with "hello", in the same write.
	mask := [4]byte{1, 2, 3, 4}
	frame := []byte{0x82, 0x80 | 5, mask[0], mask[1], mask[2], mask[3]}
	for i, b := range []byte("hello") {
		frame = append(frame, b^mask[i%4])
	}
	if _, err := c.Write(append([]byte(request), frame...)); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if string(b) != "hello" {
			t.Fatalf("the target got %q, want hello", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the early frame did not reach the target")
	}
}
