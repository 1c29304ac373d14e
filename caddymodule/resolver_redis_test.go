package caddymodule

import (
	"context"
	"errors"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/redis/go-redis/v9"

	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

func TestRedisResolverCaddyfile(t *testing.T) {
	cases := []struct {
		input, want string
	}{
		{`redis 127.0.0.1:6379`, `{"addresses":["127.0.0.1:6379"]}`},
		{`redis rediss://console@redis.internal:6380/2 {
			key_prefix vnc:
			password {env.REDIS_PASSWORD}
			timeout 750ms
			one_time
		}`, `{"addresses":["rediss://console@redis.internal:6380/2"],"key_prefix":"vnc:","password":"{env.REDIS_PASSWORD}","timeout":750000000,"one_time":true}`},
		{`redis s1:26379 s2:26379 s3:26379 {
			sentinel_master mymaster
			db 4
			username console
			password pw
			tls
		}`, `{"addresses":["s1:26379","s2:26379","s3:26379"],"sentinel_master":"mymaster","db":4,"username":"console","password":"pw","tls":true}`},
		{`redis c1:6379 c2:6379 c3:6379`, `{"addresses":["c1:6379","c2:6379","c3:6379"]}`},
		{`redis 127.0.0.1:6379 { revocations vnc-revocations }`, `{"addresses":["127.0.0.1:6379"],"revocations":"vnc-revocations"}`},
	}
	checkUnmarshal(t, func() caddyfile.Unmarshaler { return &RedisResolver{} }, cases)

	for _, bad := range []string{
		`redis`,
		`redis a:1 { db x }`,
		`redis a:1 { db -1 }`,
		`redis a:1 { db }`,
		`redis a:1 { key_prefix a b }`,
		`redis a:1 { tls yes }`,
		`redis a:1 { one_time now }`,
		`redis a:1 { revocations }`,
		`redis a:1 { revocations a b }`,
		`redis a:1 {
			one_time
			one_time
		}`,
		`redis a:1 {
			key_prefix a
			key_prefix b
		}`,
		`redis a:1 { timeout x }`,
		`redis a:1 { cluster }`,
	} {
		if _, err := unmarshalResolver(t, bad, &RedisResolver{}); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestRedisResolverAdapt(t *testing.T) {
	got := adaptResolver(t, `vnc_proxy {
		resolver redis 127.0.0.1:6379 {
			key_prefix vnc:
			one_time
		}
	}`)
	want := `{"addresses":["127.0.0.1:6379"],"key_prefix":"vnc:","one_time":true,"source":"redis"}`
	if got != want {
		t.Errorf("adapted resolver:\ngot  %s\nwant %s", got, want)
	}
}

func TestRedisResolverProvision(t *testing.T) {
	srv := testenv.StartRedis(t)
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr, DisableIdentity: true, Protocol: 2})
	defer admin.Close()
	if err := admin.Do(ctx, "ACL", "SETUSER", "console", "on", ">pw-9", "~vnc:*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	admin.Set(ctx, "vnc:abc", "10.2.3.4:5901", 0)
	t.Setenv("VNC_TEST_REDIS_PASSWORD", "pw-9")

	r := &RedisResolver{
		Addresses: []string{"redis://" + srv.Addr},
		Username:  "console",
		Password:  "{env.VNC_TEST_REDIS_PASSWORD}",
		KeyPrefix: "vnc:",
		OneTime:   true,
	}
	if err := provision(t, r); err != nil {
		t.Fatal(err)
	}
	got, err := r.Resolve(ctx, tokenresolver.Query{Token: "abc"})
	if err != nil || got.Address != "10.2.3.4:5901" {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := r.Resolve(ctx, tokenresolver.Query{Token: "abc"}); !errors.Is(err, tokenresolver.ErrNotFound) {
		t.Errorf("one_time token used twice: got %v", err)
	}

	if err := r.Cleanup(); err != nil {
		t.Errorf("Cleanup: %v", err)
	}
	if _, err := r.Resolve(ctx, tokenresolver.Query{Token: "abc"}); !errors.Is(err, tokenresolver.ErrUnavailable) {
		t.Errorf("after Cleanup the client should be closed, got %v", err)
	}

	if err := provision(t, &RedisResolver{}); err == nil {
		t.Error("provisioned without an address")
	}
}
