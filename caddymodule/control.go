package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
)

// Session control: limits on how many consoles a handler relays, consoles
// that end when their token does, and ending consoles on an
// administrator's word (the admin API, a Redis revocation).

// Why a session ended, as logged and as the close frame's text (1008).
const (
	reasonTokenExpired = "token expired"
	reasonTimeLimit    = "session time limit"
	reasonByAdmin      = "closed by administrator"
)

// limitRetryAfter is the Retry-After of a 503 for max_sessions: consoles
// are long-lived, and a browser should not retry at once.
const limitRetryAfter = 10 * time.Second

// consoleCount counts the consoles of one handler, live or being opened,
// in all and per token. A handler's count outlives its config: the handler
// at the same place of the next config goes on with it, so that the live
// consoles of the old config still count after a reload.
type consoleCount struct {
	mu       sync.Mutex
	total    int
	perToken map[string]int // by token hash
}

// Why reserve refused a console.
var (
	errTooManyConsoles         = errors.New("max_sessions reached")
	errTooManyConsolesForToken = errors.New("max_sessions_per_token reached")
)

// reserve counts a console for tokenHash unless that would exceed
// maxPerToken or max (0: no limit); release uncounts it, once.
func (c *consoleCount) reserve(tokenHash string, max, maxPerToken int) (release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if maxPerToken > 0 && c.perToken[tokenHash] >= maxPerToken {
		return nil, errTooManyConsolesForToken
	}
	if max > 0 && c.total >= max {
		return nil, errTooManyConsoles
	}
	c.total++
	c.perToken[tokenHash]++
	var once sync.Once
	return func() { once.Do(func() { c.unreserve(tokenHash) }) }, nil
}

func (c *consoleCount) unreserve(tokenHash string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.perToken[tokenHash]--; c.perToken[tokenHash] <= 0 {
		delete(c.perToken, tokenHash)
	}
}

// consoleCounts holds the counts by the handler's place among the
// vnc_proxy handlers of its config, in the order Caddy provisions them
// (the order of the config). A config is told by its context.
var consoleCounts struct {
	mu     sync.Mutex
	config context.Context
	next   int
	byKey  map[int]*consoleCount
}

// countFor returns the count of the handler being provisioned in ctx.
func countFor(ctx caddy.Context) *consoleCount {
	consoleCounts.mu.Lock()
	defer consoleCounts.mu.Unlock()
	if consoleCounts.config != ctx.Context {
		consoleCounts.config, consoleCounts.next = ctx.Context, 0
	}
	place := consoleCounts.next
	consoleCounts.next++
	if consoleCounts.byKey == nil {
		consoleCounts.byKey = make(map[int]*consoleCount)
	}
	c := consoleCounts.byKey[place]
	if c == nil {
		c = &consoleCount{perToken: make(map[string]int)}
		consoleCounts.byKey[place] = c
	}
	return c
}

// sessionEnd is when a session's token expires or its time is up, and
// which of the two comes first; zero when neither applies.
func (h *Handler) sessionEnd(started, expiresAt time.Time) (time.Time, string) {
	var at time.Time
	var reason string
	if h.EndAtExpiry && !expiresAt.IsZero() {
		at, reason = expiresAt, reasonTokenExpired
	}
	if h.MaxSessionDuration > 0 {
		limit := started.Add(time.Duration(h.MaxSessionDuration))
		if at.IsZero() || limit.Before(at) {
			at, reason = limit, reasonTimeLimit
		}
	}
	return at, reason
}

// closeRequest says which consoles an administrator ends: the body of
// POST /vnc_proxy/sessions/close and of a Redis revocation message. Both
// fields set: consoles that match both.
type closeRequest struct {
	TokenHash string `json:"token_hash,omitempty"`
	Target    string `json:"target,omitempty"`
}

// parseCloseRequest reads a close request; it never quotes the input.
func parseCloseRequest(b []byte) (closeRequest, error) {
	var req closeRequest
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return closeRequest{}, fmt.Errorf("a close request is JSON with token_hash or target (%d bytes that are not)", len(b))
	}
	if dec.More() {
		return closeRequest{}, errors.New("a close request is one JSON object")
	}
	req.TokenHash = strings.ToLower(strings.TrimSpace(req.TokenHash))
	req.Target = strings.TrimSpace(req.Target)
	if req.TokenHash == "" && req.Target == "" {
		return closeRequest{}, errors.New("a close request needs token_hash or target")
	}
	if req.Target != "" && !strings.HasPrefix(req.Target, "tcp:") && !strings.HasPrefix(req.Target, "unix:") {
		// A bare host:port is a TCP target, as in token files.
		req.Target = "tcp:" + req.Target
	}
	return req, nil
}

func (req closeRequest) matches(s *console.Session) bool {
	return (req.TokenHash == "" || req.TokenHash == s.TokenHash()) &&
		(req.Target == "" || req.Target == s.Target().String())
}
