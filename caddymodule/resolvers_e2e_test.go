package caddymodule

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

// These tests run Caddy in-process with each resolver in front of a real
// TigerVNC server and check what a browser gets: the RFB handshake for a
// valid token, 403 for an unknown one, 503 when the resolver's backend is
// down. Tokens must not appear in Caddy's logs.

// resolverSite is a site body with vnc_proxy at /websockify and the given
// resolver lines.
func resolverSite(resolver string) string {
	return "route /websockify {\n\t\tvnc_proxy {\n\t\t\t" + resolver + "\n\t\t}\n\t}"
}

// expectStatus dials the proxy with token and fails unless the handshake is
// refused with status.
func expectStatus(t *testing.T, tc *testCaddy, token string, status int) {
	t.Helper()
	ws, got, body := dialWS(t, tc.url("/websockify?token="+token), nil)
	if ws != nil {
		ws.Close()
		t.Fatalf("token was accepted, want status %d", status)
	}
	if got != status {
		t.Fatalf("status %d (%q), want %d", got, strings.TrimSpace(body), status)
	}
	if strings.Contains(body, token) {
		t.Errorf("response body %q contains the token", body)
	}
}

// checkLogsHideTokens fails when Caddy's logs contain any of the tokens.
func checkLogsHideTokens(t *testing.T, tc *testCaddy, tokens ...string) {
	t.Helper()
	logs := tc.logs()
	for _, tok := range tokens {
		if strings.Contains(logs, tok) {
			t.Errorf("Caddy's log contains a token:\n%s", logs)
		}
	}
}

func TestHTTPResolverEndToEnd(t *testing.T) {
	vnc := testenv.StartXvnc(t)
	good := "cb-good-" + strings.Repeat("7", 24)
	unknown := "cb-unknown-" + strings.Repeat("8", 24)
	broken := "cb-broken-" + strings.Repeat("9", 24)

	var mu sync.Mutex
	var seen []http.Header
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer k-e2e" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		switch strings.TrimPrefix(r.URL.Path, "/tokens/") {
		case good:
			fmt.Fprintf(w, `{"host": %q}`, vnc)
		case broken:
			http.Error(w, "database is down", http.StatusInternalServerError)
		default:
			http.NotFound(w, r)
		}
	}))
	defer api.Close()
	t.Setenv("VNC_E2E_API_KEY", "k-e2e")

	tc := startCaddy(t, resolverSite(fmt.Sprintf(`resolver http %s/tokens/{token} {
				header Authorization "Bearer {env.VNC_E2E_API_KEY}"
				timeout 1s
			}`, api.URL)))

	rfbThroughProxy(t, tc.url("/websockify?token="+good))
	expectStatus(t, tc, unknown, http.StatusForbidden)
	expectStatus(t, tc, broken, http.StatusServiceUnavailable)

	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 {
		t.Fatal("the callback saw no request")
	}
	if h := seen[0]; !strings.HasPrefix(h.Get(tokenresolver.HeaderClientAddr), "127.0.0.1:") {
		t.Errorf("callback got %s %q, want the browser's address", tokenresolver.HeaderClientAddr, h.Get(tokenresolver.HeaderClientAddr))
	}
	checkLogsHideTokens(t, tc, good, unknown, broken)
}

func TestHTTPResolverEndToEndOrigin(t *testing.T) {
	vnc := testenv.StartXvnc(t)
	origins := make(chan string, 1)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origins <- r.Header.Get(tokenresolver.HeaderOrigin)
		io.WriteString(w, vnc)
	}))
	defer api.Close()
	tc := startCaddy(t, resolverSite(fmt.Sprintf("resolver http %s/{token}", api.URL)))

	origin := "http://" + tc.addr
	ws, status, body := dialWS(t, tc.url("/websockify?token=with-origin"), http.Header{"Origin": {origin}})
	if ws == nil {
		t.Fatalf("status %d: %s", status, body)
	}
	if got := <-origins; got != origin {
		t.Errorf("callback got %s %q, want %q", tokenresolver.HeaderOrigin, got, origin)
	}
}

func TestRedisResolverEndToEnd(t *testing.T) {
	vnc := testenv.StartXvnc(t)
	srv := testenv.StartRedis(t)
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr, DisableIdentity: true, Protocol: 2})
	defer admin.Close()

	tokens := make([]string, 4)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("rd-%d-%s", i, strings.Repeat("5", 24))
	}
	once, reusable, unknown, later := tokens[0], tokens[1], tokens[2], tokens[3]
	admin.Set(ctx, "vnc:"+once, fmt.Sprintf(`{"host": %q, "port": %s}`, "127.0.0.1", vnc[strings.LastIndexByte(vnc, ':')+1:]), time.Minute)

	tc := startCaddy(t, resolverSite(fmt.Sprintf(`resolver redis redis://%s {
				key_prefix vnc:
				timeout 500ms
				one_time
			}`, srv.Addr)))

	rfbThroughProxy(t, tc.url("/websockify?token="+once))
	// one_time: the key is gone after the first session opened.
	expectStatus(t, tc, once, http.StatusForbidden)
	expectStatus(t, tc, unknown, http.StatusForbidden)

	srv.Stop()
	start := time.Now()
	expectStatus(t, tc, reusable, http.StatusServiceUnavailable)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("503 took %v with a 500ms timeout", d)
	}

	// Redis back: lookups work again without a config reload.
	srv.Restart()
	admin.Set(ctx, "vnc:"+later, vnc, time.Minute)
	waitFor(t, 10*time.Second, "lookups after Redis came back", func() bool {
		ws, _, _ := dialWS(t, tc.url("/websockify?token="+later), nil)
		if ws != nil {
			ws.Close()
			return true
		}
		admin.Set(ctx, "vnc:"+later, vnc, time.Minute) // a failed try may not have consumed it; make sure
		return false
	})
	checkLogsHideTokens(t, tc, tokens...)
}

func TestJWTResolverEndToEnd(t *testing.T) {
	vnc := testenv.StartXvnc(t)
	secret := "e2e-hmac-secret-0123456789"
	t.Setenv("VNC_E2E_JWT_SECRET", secret)
	host, port := vnc[:strings.LastIndexByte(vnc, ':')], vnc[strings.LastIndexByte(vnc, ':')+1:]
	signed := func(key string, exp time.Time) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"host": host, "port": port, "exp": exp.Unix(), "iss": "console-api",
		}).SignedString([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := signed(secret, time.Now().Add(time.Hour))
	expired := signed(secret, time.Now().Add(-time.Minute))
	forged := signed("another secret", time.Now().Add(time.Hour))

	tc := startCaddy(t, resolverSite(`resolver jwt {
				secret {env.VNC_E2E_JWT_SECRET}
				issuer console-api
			}`))
	rfbThroughProxy(t, tc.url("/websockify?token="+good))
	expectStatus(t, tc, expired, http.StatusForbidden)
	expectStatus(t, tc, forged, http.StatusForbidden)
	expectStatus(t, tc, "not-a-jwt-"+strings.Repeat("3", 24), http.StatusForbidden)
	checkLogsHideTokens(t, tc, good, expired, forged)
}
