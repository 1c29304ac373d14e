package caddymodule

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestFailedTokenRate: a client that presents too many unknown tokens is
// answered 429 with Retry-After, even with a good token, until the rate
// allows another; other clients are not affected.
func TestFailedTokenRate(t *testing.T) {
	addr, _ := startVNCDemo(t)
	tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr), "failed_token_rate 3/600ms"))
	open := func(client, token string) (int, http.Header) {
		t.Helper()
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
		ws, resp, err := d.Dial(tc.url("/websockify?token="+token), http.Header{"X-Forwarded-For": {client}})
		if ws != nil {
			ws.Close()
		}
		if resp == nil {
			t.Fatalf("dialing: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	for i := range 3 {
		if status, _ := open("198.51.100.7", fmt.Sprintf("guess-%d", i)); status != http.StatusForbidden {
			t.Fatalf("guess %d: status %d, want 403", i, status)
		}
	}
	status, hdr := open("198.51.100.7", secretToken)
	if status != http.StatusTooManyRequests {
		t.Fatalf("after 3 failed tokens: status %d, want 429", status)
	}
	if s, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After %q", hdr.Get("Retry-After"))
	}
	if status, _ := open("198.51.100.8", secretToken); status != http.StatusSwitchingProtocols {
		t.Errorf("another client: status %d, want 101", status)
	}
	// The same /64 is the same client.
	for i := range 3 {
		open(fmt.Sprintf("2001:db8:1:2::%x", i+1), "guess")
	}
	if status, _ := open("2001:db8:1:2::ff", secretToken); status != http.StatusTooManyRequests {
		t.Errorf("an IPv6 client of a /64 that failed 3 times: status %d, want 429", status)
	}
	time.Sleep(250 * time.Millisecond) // one token back (3 per 600ms)
	if status, _ := open("198.51.100.7", secretToken); status != http.StatusSwitchingProtocols {
		t.Errorf("after the rate allows another: status %d, want 101", status)
	}
}
