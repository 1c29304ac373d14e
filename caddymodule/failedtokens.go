package caddymodule

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/time/rate"
)

// maxFailedTokenClients bounds how many clients failedTokens tracks, so a
// flood of addresses cannot grow memory without bound.
var maxFailedTokenClients = 10000

// failedTokens limits how many unknown or expired tokens each client may
// present: failed_token_rate. A client over its limit is answered 429
// before its token is looked up.
type failedTokens struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex
	clients   map[netip.Prefix]*rate.Limiter
	lastSweep time.Time
}

// parseFailedTokenRate reads "<n>/<duration>", e.g. "10/1m".
func parseFailedTokenRate(s string) (*failedTokens, error) {
	count, per, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(count)
	if !ok || err != nil || n < 1 {
		return nil, fmt.Errorf("failed_token_rate %q: want <n>/<duration>, e.g. 10/1m", s)
	}
	d, err := caddy.ParseDuration(per)
	if err != nil || d <= 0 {
		return nil, fmt.Errorf("failed_token_rate %q: invalid duration %q", s, per)
	}
	return &failedTokens{
		limit:   rate.Limit(float64(n) / d.Seconds()),
		burst:   n,
		clients: make(map[netip.Prefix]*rate.Limiter),
	}, nil
}

// clientKey is what a client is counted by: its IPv4 address, or the /64
// of its IPv6 address (one host often has a whole /64).
func clientKey(ip string) (netip.Prefix, bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Prefix{}, false
	}
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p, true
}

// retryAfter returns how long the client must wait before presenting a
// token again, or zero when it may now.
func (f *failedTokens) retryAfter(ip string) time.Duration {
	key, ok := clientKey(ip)
	if !ok {
		return 0
	}
	f.mu.Lock()
	l := f.clients[key]
	f.mu.Unlock()
	if l == nil {
		return 0
	}
	now := time.Now()
	if l.TokensAt(now) >= 1 {
		return 0
	}
	r := l.ReserveN(now, 1)
	d := r.DelayFrom(now)
	r.CancelAt(now)
	return d
}

// failed counts a failed token for the client.
func (f *failedTokens) failed(ip string) {
	key, ok := clientKey(ip)
	if !ok {
		return
	}
	f.mu.Lock()
	l := f.clients[key]
	if l == nil {
		if len(f.clients) >= maxFailedTokenClients {
			f.makeRoomLocked()
		}
		l = rate.NewLimiter(f.limit, f.burst)
		f.clients[key] = l
	}
	f.mu.Unlock()
	l.Allow()
}

// makeRoomLocked forgets clients whose limit has refilled (they would start
// afresh anyway), at most once a second; when none has, one client at
// random, so that the table stays bounded under a flood of addresses.
func (f *failedTokens) makeRoomLocked() {
	now := time.Now()
	if now.Sub(f.lastSweep) >= time.Second {
		f.lastSweep = now
		for k, l := range f.clients {
			if l.TokensAt(now) >= float64(f.burst) {
				delete(f.clients, k)
			}
		}
	}
	for k := range f.clients {
		if len(f.clients) < maxFailedTokenClients {
			break
		}
		delete(f.clients, k)
	}
}

// retryAfterSeconds is a Retry-After value: whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(int(math.Max(1, math.Ceil(d.Seconds()))))
}
