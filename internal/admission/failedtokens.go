package admission

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxFailedTokenClients bounds how many clients failedTokens tracks, so a
// flood of addresses cannot grow memory without bound.
var maxFailedTokenClients = 10000

// Rate is failed_token_rate: N failures per Per. The zero Rate is no
// limit.
type Rate struct {
	N   int
	Per time.Duration
}

// failedTokens limits how many unknown or expired tokens each client may
// present: failed_token_rate. A client over its limit is answered 429
// before its token is looked up.
type failedTokens struct {
	mu        sync.Mutex
	on        bool
	limit     rate.Limit
	burst     int
	clients   map[netip.Prefix]*rate.Limiter
	lastSweep time.Time
}

func newFailedTokens() *failedTokens {
	return &failedTokens{clients: make(map[netip.Prefix]*rate.Limiter)}
}

// setRate applies r to the table, to the clients it tracks already too.
func (f *failedTokens) setRate(r Rate) error {
	if r.N < 0 || (r.N > 0 && r.Per <= 0) {
		return fmt.Errorf("failed_token_rate: want n > 0 failures per a positive duration")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.on = r.N > 0
	if !f.on {
		return nil
	}
	f.limit, f.burst = rate.Limit(float64(r.N)/r.Per.Seconds()), r.N
	for _, l := range f.clients {
		l.SetLimit(f.limit)
		l.SetBurst(f.burst)
	}
	return nil
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
	on := f.on
	f.mu.Unlock()
	if l == nil || !on {
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
	if !f.on {
		f.mu.Unlock()
		return
	}
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
