package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// burst opens n consoles at once and returns those that opened and the
// statuses of those refused.
func burst(t *testing.T, n int, url func(i int) string) ([]*websocket.Conn, map[int]int, []http.Header) {
	t.Helper()
	var (
		mu      sync.Mutex
		opened  []*websocket.Conn
		refused = map[int]int{}
		headers []http.Header
		wg      sync.WaitGroup
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
			ws, resp, err := d.Dial(url(i), nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				opened = append(opened, ws)
			case resp != nil:
				refused[resp.StatusCode]++
				headers = append(headers, resp.Header)
			default:
				t.Errorf("dial %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	t.Cleanup(func() {
		for _, ws := range opened {
			ws.Close()
		}
	})
	return opened, refused, headers
}

// TestLimitsUnderBurst: of many consoles opened at once, exactly the limit
// open; the others get their status, and the count is right again once
// consoles close and across a reload.
func TestLimitsUnderBurst(t *testing.T) {
	addr, target := startLoadTarget(t)
	var lines []string
	for i := range 40 {
		lines = append(lines, fmt.Sprintf("tok%d-%s: %s", i, secretToken, addr))
	}
	tokens := writeTokenFile(t, t.TempDir(), lines...)
	site := fileSite(tokens, "max_sessions 5", "max_sessions_per_token 2")
	tc := startCaddy(t, site)

	t.Run("max_sessions", func(t *testing.T) {
		opened, refused, headers := burst(t, 30, func(i int) string {
			return tc.url(fmt.Sprintf("/websockify?token=tok%d-%s", i, secretToken))
		})
		if len(opened) != 5 || refused[http.StatusServiceUnavailable] != 25 {
			t.Fatalf("%d opened, refused %v; want 5 opened, 25 × 503", len(opened), refused)
		}
		for _, h := range headers {
			if h.Get("Retry-After") == "" {
				t.Fatal("a 503 for max_sessions without Retry-After")
			}
		}
		// The live consoles of the old config count after a reload.
		tc.load(site)
		_, refused, _ = burst(t, 3, func(i int) string {
			return tc.url(fmt.Sprintf("/websockify?token=tok%d-%s", 30+i, secretToken))
		})
		if refused[http.StatusServiceUnavailable] != 3 {
			t.Fatalf("after a reload: refused %v, want 3 × 503", refused)
		}
		for _, ws := range opened {
			ws.Close()
		}
		waitFor(t, 5*time.Second, "the closed consoles to end", func() bool { return target.Conns() == 0 })
		opened, refused, _ = burst(t, 8, func(i int) string {
			return tc.url(fmt.Sprintf("/websockify?token=tok%d-%s", i, secretToken))
		})
		if len(opened) != 5 || refused[http.StatusServiceUnavailable] != 3 {
			t.Fatalf("after they closed: %d opened, refused %v; want 5 and 3 × 503", len(opened), refused)
		}
		for _, ws := range opened {
			ws.Close()
		}
		waitFor(t, 5*time.Second, "the consoles to end", func() bool { return target.Conns() == 0 })
	})

	t.Run("max_sessions_per_token", func(t *testing.T) {
		opened, refused, _ := burst(t, 10, func(int) string {
			return tc.url("/websockify?token=tok7-" + secretToken)
		})
		if len(opened) != 2 || refused[http.StatusTooManyRequests] != 8 {
			t.Fatalf("%d opened, refused %v; want 2 opened, 8 × 429", len(opened), refused)
		}
		// Another token is not held back.
		mustDialWS(t, tc.url("/websockify?token=tok8-"+secretToken))
		ws, status, body := dialWS(t, tc.url("/websockify?token=tok7-"+secretToken), nil)
		if ws != nil || status != http.StatusTooManyRequests || body != "too many consoles for this token\n" {
			t.Fatalf("third console of a token: status %d %q", status, body)
		}
	})
	if logs := tc.logs(); strings.Contains(logs, secretToken) {
		t.Error("the token appears in the logs")
	}
}

// TestLimitKeepsOneTimeToken: a console refused for max_sessions does not
// use up its one_time token, which opens a console once there is room.
func TestLimitKeepsOneTimeToken(t *testing.T) {
	addr, target := startLoadTarget(t)
	rs := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	ctx := context.Background()
	for _, tok := range []string{"first", "second"} {
		if err := rdb.Set(ctx, "vnc:"+tok+secretToken, addr, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	tc := startCaddy(t, fmt.Sprintf(`vnc_proxy /websockify {
		resolver redis %s {
			key_prefix vnc:
			one_time
		}
		max_sessions 1
	}`, rs.Addr))
	first := mustDialWS(t, tc.url("/websockify?token=first"+secretToken))
	if ws, status, _ := dialWS(t, tc.url("/websockify?token=second"+secretToken), nil); ws != nil || status != http.StatusServiceUnavailable {
		t.Fatalf("second console: status %d, want 503", status)
	}
	first.Close()
	waitFor(t, 5*time.Second, "the first console to end", func() bool { return target.Conns() == 0 })
	mustDialWS(t, tc.url("/websockify?token=second"+secretToken))
}

// closeText reads until the console closes and returns the close frame's
// code and text.
func closeText(t *testing.T, ws *websocket.Conn, within time.Duration) (int, string) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(within))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			ce, ok := err.(*websocket.CloseError)
			if !ok {
				t.Fatalf("the console ended with %v, not a close frame", err)
			}
			return ce.Code, ce.Text
		}
	}
}

// TestEndAtExpiry: a live console ends with 1008 "token expired" when the
// JWT's exp or the Redis key's TTL passes, and with "session time limit"
// after max_session_duration.
func TestEndAtExpiry(t *testing.T) {
	addr, _ := startLoadTarget(t)
	rs := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	const secret = "end-at-expiry-secret"
	tc := startCaddy(t, fmt.Sprintf(`route /jwt {
		vnc_proxy {
			resolver jwt {
				secret %s
			}
			end_at_expiry on
		}
	}
	route /jwt-off {
		vnc_proxy {
			resolver jwt {
				secret %s
			}
		}
	}
	route /redis {
		vnc_proxy {
			resolver redis %s
			end_at_expiry on
		}
	}
	route /limit {
		vnc_proxy {
			resolver redis %s
			max_session_duration 700ms
		}
	}`, secret, secret, rs.Addr, rs.Addr))
	host, port, _ := strings.Cut(addr, ":")

	jwtIn := func(d time.Duration) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"host": host, "port": port, "exp": time.Now().Add(d).Unix(),
		}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	check := func(t *testing.T, ws *websocket.Conn, start time.Time, earliest, latest time.Duration, text string) {
		t.Helper()
		code, got := closeText(t, ws, latest+2*time.Second)
		if code != websocket.ClosePolicyViolation || got != text {
			t.Fatalf("closed with %d %q, want 1008 %q", code, got, text)
		}
		if d := time.Since(start); d < earliest || d > latest {
			t.Errorf("closed after %v, want between %v and %v", d, earliest, latest)
		}
	}

	t.Run("JWT exp", func(t *testing.T) {
		// exp has a resolution of a second: it passes 1 to 2 s from now.
		exp := time.Now().Add(2 * time.Second).Truncate(time.Second)
		ws := mustDialWS(t, tc.url("/jwt?token="+jwtIn(2*time.Second)))
		check(t, ws, time.Now(), time.Until(exp)-100*time.Millisecond, 3*time.Second, admission.ReasonTokenExpired)
	})
	t.Run("without end_at_expiry the console stays", func(t *testing.T) {
		ws := mustDialWS(t, tc.url("/jwt-off?token="+jwtIn(time.Second)))
		_ = ws.SetReadDeadline(time.Now().Add(2500 * time.Millisecond))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				if ne, ok := err.(interface{ Timeout() bool }); !ok || !ne.Timeout() {
					t.Fatalf("the console ended: %v", err)
				}
				return
			}
		}
	})
	t.Run("Redis TTL", func(t *testing.T) {
		if err := rdb.Set(context.Background(), "ttl"+secretToken, addr, 2*time.Second).Err(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		ws := mustDialWS(t, tc.url("/redis?token=ttl"+secretToken))
		check(t, ws, start, 1800*time.Millisecond, 3*time.Second, admission.ReasonTokenExpired)
	})
	t.Run("max_session_duration", func(t *testing.T) {
		if err := rdb.Set(context.Background(), "long"+secretToken, addr, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		ws := mustDialWS(t, tc.url("/limit?token=long"+secretToken))
		check(t, ws, start, 700*time.Millisecond, 2*time.Second, admission.ReasonTimeLimit)
	})
	waitFor(t, 5*time.Second, "session ended lines with the reasons", func() bool {
		logs := tc.logs()
		return strings.Contains(logs, `"reason":"token expired"`) && strings.Contains(logs, `"reason":"session time limit"`)
	})
}
