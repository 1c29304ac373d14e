package caddymodule

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
)

// A handler's console counts and failed-token table (admission.State)
// belong to its place in the config: its server's name and its place among
// that server's vnc_proxy handlers, in the order Caddy provisions them
// (the order of the server's routes, then its error routes). Two identical
// handlers on two servers count apart; the handler that has the same place
// after a reload goes on with the same state, so that the old config's
// live consoles still count and a client over its failed-token rate stays
// over it. A state no config uses any more is dropped with the last
// handler that used it (its live consoles keep what they need).
var handlerStates = caddy.NewUsagePool()

// places numbers the vnc_proxy handlers of each server of the config
// being provisioned. Caddy provisions each server of a config with a
// context of its own, which tells one config's servers, and one config
// from the next, apart.
var places struct {
	mu       sync.Mutex
	byServer map[string]serverPlaces
}

type serverPlaces struct {
	ctx  context.Context
	next int
}

// stateKey names the handler being provisioned in ctx: its server and its
// place there.
func stateKey(ctx caddy.Context) string {
	server := ""
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		server = srv.Name()
	}
	places.mu.Lock()
	defer places.mu.Unlock()
	if places.byServer == nil {
		places.byServer = make(map[string]serverPlaces)
	}
	p := places.byServer[server]
	if p.ctx != ctx.Context {
		p = serverPlaces{ctx: ctx.Context}
	}
	key := "http/" + server + "/" + strconv.Itoa(p.next)
	p.next++
	places.byServer[server] = p
	return key
}

// handlerState is a pooled admission.State.
type handlerState struct{ *admission.State }

func (handlerState) Destruct() error { return nil }

// loadState returns the state kept under key, made if there is none, and
// counts one more user of it; releaseState counts one less.
func loadState(key string) *admission.State {
	v, _, _ := handlerStates.LoadOrNew(key, func() (caddy.Destructor, error) {
		return handlerState{admission.NewState()}, nil
	})
	return v.(handlerState).State
}

func releaseState(key string) {
	if key != "" {
		_, _ = handlerStates.Delete(key)
	}
}

// parseRate reads failed_token_rate: "<n>/<duration>", e.g. "10/1m".
func parseRate(s string) (admission.Rate, error) {
	if s == "" {
		return admission.Rate{}, nil
	}
	count, per, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(count)
	if !ok || err != nil || n < 1 {
		return admission.Rate{}, fmt.Errorf("failed_token_rate %q: want <n>/<duration>, e.g. 10/1m", s)
	}
	d, err := caddy.ParseDuration(per)
	if err != nil || d <= 0 {
		return admission.Rate{}, fmt.Errorf("failed_token_rate %q: invalid duration %q", s, per)
	}
	return admission.Rate{N: n, Per: d}, nil
}

// retryAfterSeconds is a Retry-After value: whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(int(math.Max(1, math.Ceil(d.Seconds()))))
}
