package tokenresolver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// startRedis starts a real redis-server and returns it with a plain client
// for setting up keys.
func startRedis(t *testing.T) (*testenv.Redis, *redis.Client) {
	t.Helper()
	srv := testenv.StartRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr, DisableIdentity: true, Protocol: 2})
	t.Cleanup(func() { admin.Close() })
	return srv, admin
}

func newRedis(t *testing.T, r *Redis) *Redis {
	t.Helper()
	if err := r.Init(); err != nil {
		t.Fatalf("Init: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestRedisValueFormats(t *testing.T) {
	srv, admin := startRedis(t)
	ctx := context.Background()
	future := time.Now().Add(time.Hour).Truncate(time.Second)
	cases := []struct {
		name, value string
		want        Target
	}{
		{"TokenRedis plain", "10.0.0.5:5901", Target{Network: "tcp", Address: "10.0.0.5:5901"}},
		{"TokenRedis JSON", `{"host": "10.0.0.6:5902"}`, Target{Network: "tcp", Address: "10.0.0.6:5902"}},
		{"host and port", `{"host": "10.0.0.7", "port": 5903}`, Target{Network: "tcp", Address: "10.0.0.7:5903"}},
		{"unix socket", "unix_socket:/run/vnc/vm1.sock", Target{Network: "unix", Address: "/run/vnc/vm1.sock"}},
		{"extended", fmt.Sprintf(`{"host": "10.0.0.8:5900", "password": "pw", "expires_at": %d}`, future.Unix()),
			Target{Network: "tcp", Address: "10.0.0.8:5900", Password: "pw", ExpiresAt: future}},
	}
	r := newRedis(t, &Redis{Addrs: []string{srv.Addr}, KeyPrefix: "vnc:"})
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			token := fmt.Sprint("tok", i)
			if err := admin.Set(ctx, "vnc:"+token, c.value, 0).Err(); err != nil {
				t.Fatal(err)
			}
			got, err := r.Resolve(ctx, Query{Token: token})
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got.Network != c.want.Network || got.Address != c.want.Address || got.Password != c.want.Password || !got.ExpiresAt.Equal(c.want.ExpiresAt) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}

	t.Run("prefix is part of the key", func(t *testing.T) {
		admin.Set(ctx, "bare", "10.0.0.1:5900", 0)
		if _, err := r.Resolve(ctx, Query{Token: "bare"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("key without the prefix: got %v, want ErrNotFound", err)
		}
		plain := newRedis(t, &Redis{Addrs: []string{srv.Addr}})
		if _, err := plain.Resolve(ctx, Query{Token: "bare"}); err != nil {
			t.Errorf("no prefix: %v", err)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		if _, err := r.Resolve(ctx, Query{Token: "nope"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("got %v, want ErrNotFound", err)
		}
	})
	t.Run("bad value", func(t *testing.T) {
		admin.Set(ctx, "vnc:"+secretToken, "not a target", 0)
		_, err := r.Resolve(ctx, Query{Token: secretToken})
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("got %v, want ErrUnavailable", err)
		}
		checkErrorHidesToken(t, err, secretToken)
	})
	t.Run("wrong type", func(t *testing.T) {
		admin.HSet(ctx, "vnc:"+secretToken+"h", "host", "10.0.0.1:5900")
		_, err := r.Resolve(ctx, Query{Token: secretToken + "h"})
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("got %v, want ErrUnavailable", err)
		}
		checkErrorHidesToken(t, err, secretToken)
	})
}

func TestRedisExpiry(t *testing.T) {
	srv, admin := startRedis(t)
	ctx := context.Background()
	r := newRedis(t, &Redis{Addrs: []string{srv.Addr}})

	t.Run("TTL is the lifetime", func(t *testing.T) {
		admin.Set(ctx, "ttl", "10.0.0.1:5900", 400*time.Millisecond)
		before := time.Now()
		got, err := r.Resolve(ctx, Query{Token: "ttl"})
		if err != nil {
			t.Fatal(err)
		}
		if got.ExpiresAt.Before(before) || got.ExpiresAt.After(before.Add(time.Second)) {
			t.Errorf("ExpiresAt %v, want about %v", got.ExpiresAt, before.Add(400*time.Millisecond))
		}
		time.Sleep(500 * time.Millisecond)
		if _, err := r.Resolve(ctx, Query{Token: "ttl"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("after the TTL: got %v, want ErrNotFound", err)
		}
	})
	t.Run("earlier expires_at wins", func(t *testing.T) {
		exp := time.Now().Add(30 * time.Second).Truncate(time.Second)
		admin.Set(ctx, "early", fmt.Sprintf(`{"host": "10.0.0.1:5900", "expires_at": %d}`, exp.Unix()), time.Hour)
		got, err := r.Resolve(ctx, Query{Token: "early"})
		if err != nil {
			t.Fatal(err)
		}
		if !got.ExpiresAt.Equal(exp) {
			t.Errorf("ExpiresAt %v, want the value's %v", got.ExpiresAt, exp)
		}
	})
	t.Run("earlier TTL wins", func(t *testing.T) {
		exp := time.Now().Add(time.Hour)
		admin.Set(ctx, "late", fmt.Sprintf(`{"host": "10.0.0.1:5900", "expires_at": %d}`, exp.Unix()), 30*time.Second)
		got, err := r.Resolve(ctx, Query{Token: "late"})
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Until(got.ExpiresAt); d > 31*time.Second || d < 25*time.Second {
			t.Errorf("ExpiresAt in %v, want about 30s (the TTL)", d)
		}
	})
	t.Run("expires_at passed", func(t *testing.T) {
		admin.Set(ctx, "old", `{"host": "10.0.0.1:5900", "expires_at": "2001-01-01T00:00:00Z"}`, 0)
		if _, err := r.Resolve(ctx, Query{Token: "old"}); !errors.Is(err, ErrExpired) {
			t.Errorf("got %v, want ErrExpired", err)
		}
	})
}

func TestRedisOneTime(t *testing.T) {
	srv, admin := startRedis(t)
	ctx := context.Background()
	// Two proxies, each with its own client, as on two Caddy nodes.
	nodes := []*Redis{
		newRedis(t, &Redis{Addrs: []string{srv.Addr}, OneTime: true, KeyPrefix: "once:"}),
		newRedis(t, &Redis{Addrs: []string{srv.Addr}, OneTime: true, KeyPrefix: "once:"}),
	}
	for round := 0; round < 50; round++ {
		token := fmt.Sprint("t", round)
		if err := admin.Set(ctx, "once:"+token, "10.0.0.1:5900", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		results := make([]error, len(nodes))
		targets := make([]Target, len(nodes))
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				targets[i], results[i] = n.Resolve(ctx, Query{Token: token})
			}()
		}
		wg.Wait()
		won := 0
		for i, err := range results {
			switch {
			case err == nil:
				won++
				if targets[i].ExpiresAt.IsZero() {
					t.Errorf("round %d: one-time lookup lost the TTL", round)
				}
			case !errors.Is(err, ErrNotFound):
				t.Errorf("round %d: loser got %v, want ErrNotFound", round, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d nodes opened the one-time token, want exactly 1", round, won)
		}
	}
	// The lookup that used a token deletes its key once it has the answer.
	deadline := time.Now().Add(2 * time.Second)
	for {
		n, _ := admin.Exists(ctx, "once:t0", "once:t49").Result()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("one-time keys still exist 2s after use")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRedisOneTimeStall: a one-time lookup that times out while Redis is
// stalled does not use up the token when Redis resumes: the browser got
// 503, and its retry opens the console. A lookup whose browser left is
// undone the same way. Still, at most one lookup ever gets the value.
func TestRedisOneTimeStall(t *testing.T) {
	srv, admin := startRedis(t)
	ctx := context.Background()
	r := newRedis(t, &Redis{Addrs: []string{srv.Addr}, OneTime: true, Timeout: 300 * time.Millisecond})
	other := newRedis(t, &Redis{Addrs: []string{srv.Addr}, OneTime: true, Timeout: 300 * time.Millisecond})
	if err := admin.Set(ctx, "stall", "10.0.0.1:5900", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	// Warm both pools, so the lookups below are sent, not stuck dialing.
	for _, n := range []*Redis{r, other} {
		if _, err := n.Resolve(ctx, Query{Token: "warm-up"}); !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	}

	srv.Pause()
	_, err := r.Resolve(ctx, Query{Token: "stall"})
	if !errors.Is(err, ErrUnavailable) {
		srv.Resume()
		t.Fatalf("during the stall: %v, want ErrUnavailable", err)
	}
	time.Sleep(200 * time.Millisecond)
	srv.Resume()

	var got Target
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err = other.Resolve(ctx, Query{Token: "stall"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the retry after the stall: %v; the stalled lookup used up the token", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got.Address != "10.0.0.1:5900" || got.ExpiresAt.IsZero() {
		t.Errorf("the retry got %+v", got)
	}
	if _, err := r.Resolve(ctx, Query{Token: "stall"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("a third lookup: %v, want ErrNotFound: the token was given back twice", err)
	}

	// A browser that leaves while Redis answers does not use it up either.
	if err := admin.Set(ctx, "left", "10.0.0.2:5900", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.Resolve(gone, Query{Token: "left"}); err == nil {
		t.Fatal("a lookup for a browser that left succeeded")
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, err = other.Resolve(ctx, Query{Token: "left"}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the browser left: %v; the token was used up", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRedisOutage(t *testing.T) {
	srv, admin := startRedis(t)
	ctx := context.Background()
	const timeout = 500 * time.Millisecond
	r := newRedis(t, &Redis{Addrs: []string{srv.Addr}, Timeout: timeout})
	admin.Set(ctx, "k", "10.0.0.1:5900", 0)
	if _, err := r.Resolve(ctx, Query{Token: "k"}); err != nil {
		t.Fatal(err)
	}

	t.Run("slow", func(t *testing.T) {
		// CLIENT PAUSE holds every client's commands: a Redis that hangs.
		if err := admin.Do(ctx, "CLIENT", "PAUSE", "1500", "ALL").Err(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := r.Resolve(ctx, Query{Token: "k"})
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("got %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > timeout+500*time.Millisecond {
			t.Errorf("took %v with a %v timeout", d, timeout)
		}
		time.Sleep(1100 * time.Millisecond) // until the pause ends
		waitResolves(t, r, "k")
	})

	t.Run("down", func(t *testing.T) {
		srv.Stop()
		for i := 0; i < 30; i++ { // past the pool's dial-error threshold
			start := time.Now()
			_, err := r.Resolve(ctx, Query{Token: "k"})
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Redis down: got %v, want ErrUnavailable", err)
			}
			if d := time.Since(start); d > timeout+500*time.Millisecond {
				t.Fatalf("Redis down: took %v with a %v timeout", d, timeout)
			}
		}
	})

	t.Run("back", func(t *testing.T) {
		srv.Restart()
		admin.Set(ctx, "k", "10.0.0.1:5900", 0) // a fresh server has no data
		waitResolves(t, r, "k")
	})
}

// waitResolves waits until r resolves token again, without re-creating it.
func waitResolves(t *testing.T, r *Redis, token string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := r.Resolve(context.Background(), Query{Token: token})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing 10s after Redis came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRedisAuthAndDB(t *testing.T) {
	srv, admin := startRedis(t)
	ctx := context.Background()
	if err := admin.Do(ctx, "ACL", "SETUSER", "console", "on", ">pw-1", "~*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	db3 := redis.NewClient(&redis.Options{Addr: srv.Addr, DB: 3, DisableIdentity: true, Protocol: 2})
	defer db3.Close()
	db3.Set(ctx, "p:tok", "10.0.0.3:5900", 0)

	for _, c := range []struct {
		name string
		r    Redis
	}{
		{"options", Redis{Addrs: []string{srv.Addr}, DB: 3, Username: "console", Password: "pw-1"}},
		{"URL", Redis{Addrs: []string{"redis://console:pw-1@" + srv.Addr + "/3"}}},
		{"URL with options winning", Redis{Addrs: []string{"redis://console:wrong@" + srv.Addr + "/0"}, DB: 3, Password: "pw-1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := c.r
			r.KeyPrefix = "p:"
			newRedis(t, &r)
			got, err := r.Resolve(ctx, Query{Token: "tok"})
			if err != nil || got.Address != "10.0.0.3:5900" {
				t.Fatalf("got %+v, %v", got, err)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		r := newRedis(t, &Redis{Addrs: []string{srv.Addr}, DB: 3, Username: "console", Password: "nope", KeyPrefix: "p:"})
		_, err := r.Resolve(ctx, Query{Token: "tok"})
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("got %v, want ErrUnavailable", err)
		}
		if strings.Contains(err.Error(), "nope") {
			t.Errorf("error %q contains the password", err)
		}
	})
}

func TestRedisConfig(t *testing.T) {
	for _, r := range []*Redis{
		{},
		{Addrs: []string{"a:1"}, Timeout: -1},
		{Addrs: []string{"redis://user:pw@host:notaport/x"}},
		{Addrs: []string{"a:1", "b:1"}, DB: 2},
	} {
		err := r.Init()
		if err == nil {
			r.Close()
			t.Errorf("Init accepted %+v", r)
			continue
		}
		if strings.Contains(err.Error(), "pw") {
			t.Errorf("error %q contains the password", err)
		}
	}
	// Sentinel and Cluster forms are accepted without connecting.
	for _, r := range []*Redis{
		{Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "mymaster", DB: 1},
		{Addrs: []string{"c1:6379", "c2:6379", "c3:6379"}},
		{Addrs: []string{"rediss://c1:6379"}, TLS: true},
	} {
		if err := r.Init(); err != nil {
			t.Errorf("Init(%+v): %v", r, err)
			continue
		}
		r.Close()
	}
}

func TestDecodeLookupReply(t *testing.T) {
	v, ttl, err := decodeLookupReply([]any{"10.0.0.1:5900", int64(1500)})
	if err != nil || v != "10.0.0.1:5900" || ttl != 1500 {
		t.Errorf("got %q %d %v", v, ttl, err)
	}
	for _, bad := range []any{nil, "x", []any{"x"}, []any{int64(1), int64(1)}, []any{"x", "1"}} {
		if _, _, err := decodeLookupReply(bad); err == nil {
			t.Errorf("decodeLookupReply(%#v) succeeded", bad)
		}
	}
}

func FuzzTargetFromRedis(f *testing.F) {
	f.Add("10.0.0.1:5900", int64(-1))
	f.Add(`{"host": "h", "port": 5900}`, int64(1000))
	f.Add(`{"host": "h:1", "expires_at": 1}`, int64(0))
	f.Add(`{"host": "h:1", "expires_at": "2030-01-01T00:00:00Z"}`, int64(9223372036854775807))
	now := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, value string, pttl int64) {
		got, err := targetFromRedis(value, pttl, now)
		if err != nil {
			if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrExpired) {
				t.Fatalf("error %v is neither ErrUnavailable nor ErrExpired", err)
			}
			return
		}
		if got.Network == "" || got.Address == "" {
			t.Fatalf("empty target %+v from %q", got, value)
		}
		if got.Expired(now) {
			t.Fatalf("returned an expired target %+v", got)
		}
		if pttl >= 0 && pttl < 1<<40 {
			limit := now.Add(time.Duration(pttl) * time.Millisecond)
			if got.ExpiresAt.IsZero() || got.ExpiresAt.After(limit) {
				t.Fatalf("ExpiresAt %v is later than the TTL %dms", got.ExpiresAt, pttl)
			}
		}
		// The decoder takes the script's reply apart the same way.
		v, ttl, err := decodeLookupReply([]any{value, pttl})
		if err != nil || v != value || ttl != pttl {
			t.Fatalf("decodeLookupReply lost data: %q %d %v", v, ttl, err)
		}
	})
}
