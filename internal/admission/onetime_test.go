package admission_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

// TestOneTimeToken: with a real Redis and one_time tokens, a request
// refused before its token is looked up (Origin, console limits) does not
// spend it, nor does one whose client left while Redis stalled; an
// admitted console spends it.
func TestOneTimeToken(t *testing.T) {
	rds := testenv.StartRedis(t)
	vnc := startVNC(t, "")
	resolver := &tokenresolver.Redis{Addrs: []string{rds.Addr}, OneTime: true, Timeout: 5 * time.Second}
	if err := resolver.Init(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resolver.Close() })
	client := redis.NewClient(&redis.Options{Addr: rds.Addr})
	t.Cleanup(func() { client.Close() })
	ctx := context.Background()
	set := func(token, value string) {
		t.Helper()
		if err := client.Set(ctx, token, value, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// unspent reports whether the token's value is in Redis as it was
	// set, within a bounded wait for a release under way.
	unspent := func(token, value string) bool {
		t.Helper()
		deadline := time.Now().Add(wait)
		for {
			got, err := client.Get(ctx, token).Result()
			if err == nil && got == value {
				return true
			}
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	state := admission.NewState()
	p := newPipeline(t, admission.Config{Resolver: resolver, MaxSessions: 1, DialTimeout: wait}, state)
	set("one", vnc)
	set("two", vnc)
	first := admitted(t, p, request("one"))

	refused(t, p, request("two"), http.StatusServiceUnavailable, "too many consoles")
	badOrigin := request("two")
	badOrigin.Origin = "https://evil.example"
	refused(t, p, badOrigin, http.StatusForbidden, "origin not allowed")
	if !unspent("two", vnc) {
		t.Fatal("a refused request spent its one_time token")
	}

	first.Release()
	refused(t, p, request("one"), http.StatusForbidden, "invalid or expired token")
	admitted(t, p, request("two")).Release()
	refused(t, p, request("two"), http.StatusForbidden, "invalid or expired token")

	// Redis stalls and the client leaves: the lookup is undone once Redis
	// answers again.
	set("three", vnc)
	rds.Pause()
	resumed := false
	defer func() {
		if !resumed {
			rds.Resume()
		}
	}()
	leave, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, ref := p.Admit(leave, request("three"))
	if ref == nil || ref.Status != 0 || ref.Result != "client_gone" {
		t.Fatalf("got %+v while Redis stalled and the client left, want status 0", ref)
	}
	rds.Resume()
	resumed = true
	// The lookup queued in the stalled Redis may still run, and its undo
	// after it: the token is back once both have.
	deadline := time.Now().Add(wait)
	for {
		c, ref := p.Admit(ctx, request("three"))
		if ref == nil {
			t.Cleanup(c.Abandon)
			break
		}
		if ref.Status != http.StatusForbidden || time.Now().After(deadline) {
			t.Fatalf("the token of a client that left while Redis stalled is spent: %d %s", ref.Status, ref.Reason)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if state.Consoles() != 1 {
		t.Errorf("%d consoles counted, want 1", state.Consoles())
	}
}

// TestOneTimeTokenRefusedAfterLookup: a one_time token names one attempt:
// a request refused after its lookup (here a 502, the VNC server down)
// has spent it, as the README says. GETDEL is what makes it one-time
// across nodes; giving it back would race another node's lookup. Only a
// client that leaves gets its token back.
func TestOneTimeTokenRefusedAfterLookup(t *testing.T) {
	rds := testenv.StartRedis(t)
	resolver := &tokenresolver.Redis{Addrs: []string{rds.Addr}, OneTime: true, Timeout: 5 * time.Second}
	if err := resolver.Init(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resolver.Close() })
	client := redis.NewClient(&redis.Options{Addr: rds.Addr})
	t.Cleanup(func() { client.Close() })
	ctx := context.Background()
	closed := closedPort(t)
	if err := client.Set(ctx, "tok", closed, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	p := newPipeline(t, admission.Config{Resolver: resolver, DialTimeout: wait}, nil)
	refused(t, p, request("tok"), http.StatusBadGateway, "VNC server unavailable")
	refused(t, p, request("tok"), http.StatusForbidden, "invalid or expired token")
}
