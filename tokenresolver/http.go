package tokenresolver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Headers the HTTP callback sends with every request, so the service behind it
// can see who is asking. When several browsers ask for the same token at once
// they share one request, which carries the first caller's values.
const (
	HeaderClientAddr = "X-Vnc-Proxy-Client-Addr"
	HeaderOrigin     = "X-Vnc-Proxy-Origin"
)

// TokenPlaceholder in an HTTPCallback's URL is replaced by the URL-escaped
// token.
const TokenPlaceholder = "{token}"

// DefaultHTTPTimeout bounds one callback request when HTTPCallback.Timeout is
// zero.
const DefaultHTTPTimeout = 2 * time.Second

// maxCallbackBody bounds how much of a callback's response is read: a target
// record is a few dozen bytes.
const maxCallbackBody = 64 << 10

// defaultCacheEntries bounds the positive cache when MaxCacheEntries is zero.
const defaultCacheEntries = 10000

// DefaultMaxInFlight bounds the callback requests in flight when
// HTTPCallback.MaxInFlight is zero.
const DefaultMaxInFlight = 256

// HTTPCallback resolves a token by asking an HTTP service.
//
// A 200 answer carries the target in any format ParseValue accepts; 401, 403,
// 404 and 410 mean the token is unknown (ErrNotFound); any other status, a
// timeout, a failed connection or a body that does not parse is
// ErrUnavailable. Redirects are not followed. Concurrent lookups of the same
// token share one request; lookups of different tokens do not wait on each
// other.
//
// Configure the exported fields, then call Init once before the first Resolve.
type HTTPCallback struct {
	// URL of the service; every TokenPlaceholder in it is replaced by the
	// token, escaped so that it is one path segment or one query value.
	URL string
	// Method is GET or POST; POST sends {"token": "..."} as JSON. Default: GET.
	Method string
	// Header is sent with every request.
	Header http.Header
	// Timeout bounds one request, body included. Default: 2s.
	Timeout time.Duration
	// CacheTTL is how long a found token is remembered (never past its
	// ExpiresAt). Default: 0, no cache.
	CacheTTL time.Duration
	// MaxCacheEntries bounds the cache. Default: 10000.
	MaxCacheEntries int
	// MaxInFlight bounds the callback requests in flight (lookups of one
	// token share one); a lookup beyond it is ErrUnavailable at once.
	// Default: 256.
	MaxInFlight int
	// Client sends the requests. Default: a client with its own transport.
	Client *http.Client

	base     context.Context
	stop     context.CancelFunc
	flights  flightGroup
	cacheMu  sync.Mutex
	cache    map[string]cachedTarget
	ownedTpt *http.Transport
	now      func() time.Time
}

type cachedTarget struct {
	target Target
	until  time.Time
}

// Init checks the configuration and prepares the resolver.
func (h *HTTPCallback) Init() error {
	u, err := url.Parse(strings.ReplaceAll(h.URL, TokenPlaceholder, "t"))
	if err != nil {
		return fmt.Errorf("callback URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return errors.New("callback URL must be an absolute http:// or https:// URL")
	}
	switch h.Method {
	case "":
		h.Method = http.MethodGet
	case http.MethodGet, http.MethodPost:
	default:
		return fmt.Errorf("callback method %q: must be GET or POST", h.Method)
	}
	if h.Method == http.MethodGet && !strings.Contains(h.URL, TokenPlaceholder) {
		return fmt.Errorf("callback URL must contain %s when the method is GET", TokenPlaceholder)
	}
	if h.Timeout < 0 || h.CacheTTL < 0 || h.MaxCacheEntries < 0 || h.MaxInFlight < 0 {
		return errors.New("timeout, cache, cache size and requests in flight must not be negative")
	}
	if h.MaxInFlight == 0 {
		h.MaxInFlight = DefaultMaxInFlight
	}
	if h.Timeout == 0 {
		h.Timeout = DefaultHTTPTimeout
	}
	if h.MaxCacheEntries == 0 {
		h.MaxCacheEntries = defaultCacheEntries
	}
	if h.Client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 32
		h.ownedTpt = t
		h.Client = &http.Client{Transport: t}
	}
	h.Client = noRedirects(h.Client)
	h.base, h.stop = context.WithCancel(context.Background())
	h.cache = make(map[string]cachedTarget)
	if h.now == nil {
		h.now = time.Now
	}
	return nil
}

// Close ends requests in flight and closes idle connections.
func (h *HTTPCallback) Close() error {
	if h.stop != nil {
		h.stop()
	}
	if h.ownedTpt != nil {
		h.ownedTpt.CloseIdleConnections()
	}
	return nil
}

// Resolve asks the service for the token's target.
func (h *HTTPCallback) Resolve(ctx context.Context, q Query) (Target, error) {
	if q.Token == "" {
		return Target{}, ErrNotFound
	}
	now := h.now()
	if t, ok := h.cached(q.Token, now); ok {
		if t.Expired(now) {
			return Target{}, ErrExpired
		}
		return t, nil
	}
	t, err := h.flights.do(ctx, h.base, q.Token, h.MaxInFlight, "callback", func(ctx context.Context) (Target, error) {
		ctx, cancel := context.WithTimeout(ctx, h.Timeout)
		defer cancel()
		return h.fetch(ctx, q)
	})
	if err != nil {
		return Target{}, err
	}
	now = h.now()
	if t.Expired(now) {
		return Target{}, ErrExpired
	}
	h.remember(q.Token, t, now)
	return t, nil
}

// noRedirects returns a copy of c that follows no redirects (a token lookup
// answers itself, or it is not an answer) and has no timeout of its own
// (each request's context bounds it), leaving the caller's client as it is.
func noRedirects(c *http.Client) *http.Client {
	cp := *c
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cp.Timeout = 0
	return &cp
}

// fetch makes one callback request. Its errors name neither the token nor the
// URL it was substituted into.
func (h *HTTPCallback) fetch(ctx context.Context, q Query) (Target, error) {
	var body io.Reader
	if h.Method == http.MethodPost {
		b, err := json.Marshal(struct {
			Token string `json:"token"`
		}{q.Token})
		if err != nil {
			return Target{}, fmt.Errorf("%w: encoding callback body: %v", ErrUnavailable, err)
		}
		body = bytes.NewReader(b)
	}
	u := strings.ReplaceAll(h.URL, TokenPlaceholder, escapeToken(q.Token))
	req, err := http.NewRequestWithContext(ctx, h.Method, u, body)
	if err != nil {
		// url.Parse errors quote the URL, which now holds the token.
		return Target{}, fmt.Errorf("%w: callback URL with the token does not parse", ErrUnavailable)
	}
	for name, values := range h.Header {
		for _, v := range values {
			req.Header.Add(name, v)
		}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json, text/plain")
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "caddy-vnc-proxy")
	}
	if q.ClientAddr != "" {
		req.Header.Set(HeaderClientAddr, q.ClientAddr)
	}
	if q.Origin != "" {
		req.Header.Set(HeaderOrigin, q.Origin)
	}

	resp, err := h.Client.Do(req)
	if err != nil {
		return Target{}, fmt.Errorf("%w: callback request: %v", ErrUnavailable, requestErrorReason(err))
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusForbidden, http.StatusUnauthorized, http.StatusGone:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxCallbackBody))
		return Target{}, fmt.Errorf("%w: callback answered %d", ErrNotFound, resp.StatusCode)
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxCallbackBody))
		return Target{}, fmt.Errorf("%w: callback answered %d", ErrUnavailable, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxCallbackBody+1))
	if err != nil {
		return Target{}, fmt.Errorf("%w: reading callback response: %v", ErrUnavailable, requestErrorReason(err))
	}
	if len(b) > maxCallbackBody {
		return Target{}, fmt.Errorf("%w: callback response larger than %d bytes", ErrUnavailable, maxCallbackBody)
	}
	t, err := ParseValue(b)
	if err != nil {
		return Target{}, fmt.Errorf("%w: callback response: %w", ErrUnavailable, err)
	}
	return t, nil
}

// requestErrorReason drops the *url.Error wrapper, whose text quotes the URL
// and with it the token.
func requestErrorReason(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("timed out: %w", err)
	}
	return err
}

// escapeToken percent-encodes every byte but the unreserved ones of RFC 3986,
// so the token is safe as a path segment and as a query value alike.
func escapeToken(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func (h *HTTPCallback) cached(token string, now time.Time) (Target, bool) {
	if h.CacheTTL <= 0 {
		return Target{}, false
	}
	h.cacheMu.Lock()
	defer h.cacheMu.Unlock()
	e, ok := h.cache[token]
	if !ok {
		return Target{}, false
	}
	if !now.Before(e.until) {
		delete(h.cache, token)
		return Target{}, false
	}
	return e.target, true
}

func (h *HTTPCallback) remember(token string, t Target, now time.Time) {
	if h.CacheTTL <= 0 {
		return
	}
	until := now.Add(h.CacheTTL)
	if !t.ExpiresAt.IsZero() && t.ExpiresAt.Before(until) {
		until = t.ExpiresAt
	}
	h.cacheMu.Lock()
	defer h.cacheMu.Unlock()
	if _, ok := h.cache[token]; !ok && len(h.cache) >= h.MaxCacheEntries {
		for k, e := range h.cache {
			if !now.Before(e.until) {
				delete(h.cache, k)
			}
		}
		// Still full: drop an arbitrary entry; it is only a cache.
		for k := range h.cache {
			if len(h.cache) < h.MaxCacheEntries {
				break
			}
			delete(h.cache, k)
		}
	}
	h.cache[token] = cachedTarget{target: t, until: until}
}

// flightGroup lets concurrent lookups of one key share one call, bounds
// the calls in flight, and cancels a call whose callers have all left.
type flightGroup struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done   chan struct{}
	target Target
	err    error

	waiters int // guarded by flightGroup.mu
	cancel  context.CancelFunc
}

// errTooManyInFlight: the lookup would exceed the calls in flight allowed.
var errTooManyInFlight = fmt.Errorf("%w: too many lookups in flight", ErrUnavailable)

// start joins the call in progress for key, or starts fn in its own
// goroutine with a context from base, so that one caller's cancellation
// does not end it for the others. With max calls in flight already, it
// returns an error wrapping ErrUnavailable.
func (g *flightGroup) start(base context.Context, key string, max int, fn func(context.Context) (Target, error)) (*flight, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[key]; ok && f.waiters > 0 {
		f.waiters++
		return f, nil
	}
	// (A call whose callers all left is being cancelled: start anew.)
	if max > 0 && len(g.m) >= max {
		return nil, errTooManyInFlight
	}
	if g.m == nil {
		g.m = make(map[string]*flight)
	}
	ctx, cancel := context.WithCancel(base)
	f := &flight{done: make(chan struct{}), waiters: 1, cancel: cancel}
	g.m[key] = f
	go func() {
		f.target, f.err = fn(ctx)
		g.mu.Lock()
		if g.m[key] == f {
			delete(g.m, key)
		}
		g.mu.Unlock()
		cancel()
		close(f.done)
	}()
	return f, nil
}

// do joins or starts the call for key (see start) and waits for its
// answer, or for ctx: a caller that stops waiting leaves the call, which is
// cancelled when no caller is left. what names the service in errors.
func (g *flightGroup) do(ctx, base context.Context, key string, max int, what string, fn func(context.Context) (Target, error)) (Target, error) {
	f, err := g.start(base, key, max, fn)
	if err != nil {
		return Target{}, err
	}
	select {
	case <-f.done:
		return f.target, f.err
	case <-ctx.Done():
		g.leave(f)
		return Target{}, fmt.Errorf("%w: waiting for %s: %w", ErrUnavailable, what, ctx.Err())
	}
}

// leave is called by a caller that stops waiting for f; when none is left,
// the call is cancelled.
func (g *flightGroup) leave(f *flight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f.waiters--
	if f.waiters == 0 {
		f.cancel()
	}
}
