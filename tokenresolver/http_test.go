package tokenresolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// secretToken has characters that need escaping in a URL, to check that the
// service gets it back intact and that no error repeats it.
const secretToken = "s3cret/tok en?x=1&y#z+%"

func newCallback(t *testing.T, h *HTTPCallback) *HTTPCallback {
	t.Helper()
	if err := h.Init(); err != nil {
		t.Fatalf("Init: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// checkErrorHidesToken fails when an error repeats the token, raw or escaped.
func checkErrorHidesToken(t *testing.T, err error, token string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range []string{token, escapeToken(token)} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains the token", err)
		}
	}
}

func TestHTTPCallbackBodies(t *testing.T) {
	future := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	cases := []struct {
		name, body string
		want       Target
	}{
		{"plain", "10.0.0.5:5901", Target{Network: "tcp", Address: "10.0.0.5:5901"}},
		{"plain with newline", "10.0.0.5:5901\n", Target{Network: "tcp", Address: "10.0.0.5:5901"}},
		{"websockify JSON host:port", `{"host": "vm1.internal:5902"}`, Target{Network: "tcp", Address: "vm1.internal:5902"}},
		{"JSONTokenApi host and port", `{"host": "10.0.0.7", "port": 5903}`, Target{Network: "tcp", Address: "10.0.0.7:5903"}},
		{"IPv6", `{"host": "fe80::1", "port": 5900}`, Target{Network: "tcp", Address: "[fe80::1]:5900"}},
		{"extended", fmt.Sprintf(`{"host": "10.0.0.8:5900", "password": "pw", "expires_at": %q}`, future.Format(time.RFC3339)),
			Target{Network: "tcp", Address: "10.0.0.8:5900", Password: "pw", ExpiresAt: future}},
		{"expires_at as Unix seconds", fmt.Sprintf(`{"host": "10.0.0.8:5900", "expires_at": %d}`, future.Unix()),
			Target{Network: "tcp", Address: "10.0.0.8:5900", ExpiresAt: future}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, c.body)
			}))
			defer srv.Close()
			h := newCallback(t, &HTTPCallback{URL: srv.URL + "/console/{token}"})
			got, err := h.Resolve(context.Background(), Query{Token: "tok"})
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got.Network != c.want.Network || got.Address != c.want.Address || got.Password != c.want.Password || !got.ExpiresAt.Equal(c.want.ExpiresAt) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestHTTPCallbackStatuses(t *testing.T) {
	cases := []struct {
		status int
		body   string
		want   error
	}{
		{http.StatusNotFound, "", ErrNotFound},
		{http.StatusForbidden, "", ErrNotFound},
		{http.StatusUnauthorized, "", ErrNotFound},
		{http.StatusGone, "", ErrNotFound},
		{http.StatusInternalServerError, "", ErrUnavailable},
		{http.StatusBadGateway, "", ErrUnavailable},
		{http.StatusServiceUnavailable, "", ErrUnavailable},
		{http.StatusNoContent, "", ErrUnavailable},
		{http.StatusFound, "", ErrUnavailable},
		{http.StatusTooManyRequests, "", ErrUnavailable},
		{http.StatusOK, "<html>not a target</html>", ErrUnavailable},
		{http.StatusOK, `{"host": }`, ErrUnavailable},
		{http.StatusOK, "", ErrUnavailable},
		{http.StatusOK, strings.Repeat("x", 100<<10), ErrUnavailable},
		{http.StatusOK, `{"host": "10.0.0.1:5900", "expires_at": "2001-01-01T00:00:00Z"}`, ErrExpired},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%d %.20s", c.status, c.body), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if c.status == http.StatusFound {
					w.Header().Set("Location", "/login")
				}
				w.WriteHeader(c.status)
				io.WriteString(w, c.body)
			}))
			defer srv.Close()
			h := newCallback(t, &HTTPCallback{URL: srv.URL + "/console?token={token}"})
			_, err := h.Resolve(context.Background(), Query{Token: secretToken})
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			checkErrorHidesToken(t, err, secretToken)
		})
	}
}

func TestHTTPCallbackRequest(t *testing.T) {
	type seen struct {
		method, path, query, clientAddr, origin, apiKey, contentType string
		body                                                         map[string]string
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{
			method: r.Method, path: r.URL.Path, query: r.URL.Query().Get("t"),
			clientAddr: r.Header.Get(HeaderClientAddr), origin: r.Header.Get(HeaderOrigin),
			apiKey: r.Header.Get("X-Api-Key"), contentType: r.Header.Get("Content-Type"),
		}
		if r.Method == http.MethodPost {
			if err := json.NewDecoder(r.Body).Decode(&s.body); err != nil {
				t.Errorf("decoding POST body: %v", err)
			}
		}
		got <- s
		io.WriteString(w, "127.0.0.1:5900")
	}))
	defer srv.Close()
	q := Query{Token: secretToken, ClientAddr: "203.0.113.9:51234", Origin: "https://console.example.com"}

	t.Run("GET", func(t *testing.T) {
		h := newCallback(t, &HTTPCallback{
			URL:    srv.URL + "/tokens/{token}?t={token}",
			Header: http.Header{"X-Api-Key": {"k1"}},
		})
		if _, err := h.Resolve(context.Background(), q); err != nil {
			t.Fatal(err)
		}
		s := <-got
		if s.method != "GET" || s.path != "/tokens/"+secretToken || s.query != secretToken {
			t.Errorf("request %s path %q query %q: token not passed intact", s.method, s.path, s.query)
		}
		if s.clientAddr != q.ClientAddr || s.origin != q.Origin || s.apiKey != "k1" {
			t.Errorf("headers: client addr %q, origin %q, api key %q", s.clientAddr, s.origin, s.apiKey)
		}
	})
	t.Run("POST", func(t *testing.T) {
		h := newCallback(t, &HTTPCallback{URL: srv.URL + "/lookup", Method: "POST"})
		if _, err := h.Resolve(context.Background(), q); err != nil {
			t.Fatal(err)
		}
		s := <-got
		if s.method != "POST" || s.body["token"] != secretToken || s.contentType != "application/json" {
			t.Errorf("request %s, content type %q, body %v", s.method, s.contentType, s.body)
		}
		if s.clientAddr != q.ClientAddr || s.origin != q.Origin {
			t.Errorf("headers: client addr %q, origin %q", s.clientAddr, s.origin)
		}
	})
}

func TestHTTPCallbackTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	h := newCallback(t, &HTTPCallback{URL: srv.URL + "/{token}", Timeout: 200 * time.Millisecond})
	start := time.Now()
	_, err := h.Resolve(context.Background(), Query{Token: secretToken})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v with a 200ms timeout", d)
	}
	if !strings.Contains(err.Error(), "timed out") {
		t.Errorf("error %q does not say it timed out", err)
	}
	checkErrorHidesToken(t, err, secretToken)
}

func TestHTTPCallbackRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	h := newCallback(t, &HTTPCallback{URL: "http://" + addr + "/{token}"})
	_, err = h.Resolve(context.Background(), Query{Token: secretToken})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	checkErrorHidesToken(t, err, secretToken)
}

// blockingService answers each token after its release channel closes, and
// counts requests per token.
type blockingService struct {
	mu       sync.Mutex
	requests map[string]int
	release  map[string]chan struct{}
}

func (s *blockingService) gate(token string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.release == nil {
		s.release = make(map[string]chan struct{})
		s.requests = make(map[string]int)
	}
	if s.release[token] == nil {
		s.release[token] = make(chan struct{})
	}
	return s.release[token]
}

func (s *blockingService) count(token string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[token]
}

func (s *blockingService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token := strings.TrimPrefix(r.URL.Path, "/")
	gate := s.gate(token)
	s.mu.Lock()
	s.requests[token]++
	s.mu.Unlock()
	select {
	case <-gate:
		io.WriteString(w, "127.0.0.1:5900")
	case <-r.Context().Done():
	}
}

func TestHTTPCallbackCoalesces(t *testing.T) {
	svc := &blockingService{}
	srv := httptest.NewServer(svc)
	defer srv.Close()
	h := newCallback(t, &HTTPCallback{URL: srv.URL + "/{token}", Timeout: 10 * time.Second})

	const browsers = 20
	var started atomic.Int32
	errs := make(chan error, browsers)
	for i := 0; i < browsers; i++ {
		go func() {
			started.Add(1)
			_, err := h.Resolve(context.Background(), Query{Token: "shared", ClientAddr: fmt.Sprintf("192.0.2.%d:1000", i)})
			errs <- err
		}()
	}
	waitFor(t, func() bool { return started.Load() == browsers && svc.count("shared") >= 1 })
	time.Sleep(50 * time.Millisecond) // let every goroutine reach the shared request

	// Another token is not held up by the pending one.
	other := svc.gate("other")
	close(other)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := h.Resolve(ctx, Query{Token: "other"}); err != nil {
		t.Fatalf("a different token waited on the pending one: %v", err)
	}

	close(svc.gate("shared"))
	for i := 0; i < browsers; i++ {
		if err := <-errs; err != nil {
			t.Errorf("Resolve: %v", err)
		}
	}
	if n := svc.count("shared"); n != 1 {
		t.Errorf("service got %d requests for one token asked by %d browsers at once, want 1", n, browsers)
	}
}

func TestHTTPCallbackCallerGivesUp(t *testing.T) {
	svc := &blockingService{}
	srv := httptest.NewServer(svc)
	defer srv.Close()
	h := newCallback(t, &HTTPCallback{URL: srv.URL + "/{token}", Timeout: 10 * time.Second})

	second := make(chan error, 1)
	go func() {
		_, err := h.Resolve(context.Background(), Query{Token: "t"})
		second <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := h.Resolve(ctx, Query{Token: "t"})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("caller whose context ended got %v", err)
	}
	// The shared request goes on for the caller still waiting.
	close(svc.gate("t"))
	if err := <-second; err != nil {
		t.Fatalf("the other caller got %v", err)
	}
}

func TestHTTPCallbackCache(t *testing.T) {
	var requests atomic.Int32
	var body atomic.Value
	body.Store("127.0.0.1:5900")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if strings.HasSuffix(r.URL.Path, "/unknown") {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, body.Load().(string))
	}))
	defer srv.Close()

	now := time.Now()
	clock := func() time.Time { return now }
	h := &HTTPCallback{URL: srv.URL + "/{token}", CacheTTL: time.Minute, MaxCacheEntries: 3, now: clock}
	newCallback(t, h)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := h.Resolve(ctx, Query{Token: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests for a cached token, want 1", n)
	}
	for i := 0; i < 2; i++ {
		if _, err := h.Resolve(ctx, Query{Token: "unknown"}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("got %v", err)
		}
	}
	if n := requests.Load(); n != 3 {
		t.Errorf("%d requests, want 3: unknown tokens must not be cached", n)
	}
	now = now.Add(61 * time.Second)
	if _, err := h.Resolve(ctx, Query{Token: "a"}); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 4 {
		t.Errorf("%d requests, want 4: the cache entry outlived its TTL", n)
	}

	// The cache stays bounded.
	for i := 0; i < 10; i++ {
		if _, err := h.Resolve(ctx, Query{Token: fmt.Sprint("t", i)}); err != nil {
			t.Fatal(err)
		}
	}
	h.cacheMu.Lock()
	size := len(h.cache)
	h.cacheMu.Unlock()
	if size > 3 {
		t.Errorf("cache holds %d entries, bound is 3", size)
	}

	// A cached target is not served past its own expiry.
	body.Store(fmt.Sprintf(`{"host": "127.0.0.1:5900", "expires_at": %d}`, now.Add(10*time.Second).Unix()))
	if _, err := h.Resolve(ctx, Query{Token: "expiring"}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(11 * time.Second)
	before := requests.Load()
	if _, err := h.Resolve(ctx, Query{Token: "expiring"}); !errors.Is(err, ErrExpired) {
		t.Errorf("got %v, want ErrExpired", err)
	}
	if requests.Load() != before+1 {
		t.Errorf("an expired cache entry was served without asking the service")
	}
}

func TestHTTPCallbackConfig(t *testing.T) {
	for _, h := range []*HTTPCallback{
		{URL: ""},
		{URL: "/relative/{token}"},
		{URL: "ftp://host/{token}"},
		{URL: "http://host/no-token"},
		{URL: "http://host/{token}", Method: "PUT"},
		{URL: "http://host/{token}", Timeout: -1},
	} {
		if err := h.Init(); err == nil {
			t.Errorf("Init accepted %+v", h)
		}
	}
	h := &HTTPCallback{URL: "http://host/lookup", Method: "POST"}
	if err := h.Init(); err != nil {
		t.Errorf("POST without {token} in the URL: %v", err)
	}
}

func TestEscapeToken(t *testing.T) {
	for in, want := range map[string]string{
		"abc-._~XYZ09": "abc-._~XYZ09",
		"a/b?c&d=e f":  "a%2Fb%3Fc%26d%3De%20f",
		"ü+%#":         "%C3%BC%2B%25%23",
	} {
		if got := escapeToken(in); got != want {
			t.Errorf("escapeToken(%q) = %q, want %q", in, got, want)
		}
	}
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// slowService answers after a long time and counts the requests in
// flight, which end early only when the client cancels them.
type slowService struct {
	inFlight atomic.Int32
}

func (s *slowService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	// Until the body is read, the server does not notice the client leave.
	_, _ = io.Copy(io.Discard, r.Body)
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
		_, _ = io.WriteString(w, "10.0.0.1:5900")
	}
}

// TestHTTPCallbackAllCallersGone: a lookup whose callers have all given
// up is cancelled, so browsers that leave a slow callback leave no
// requests behind; a later caller of the same token gets a fresh one.
func TestHTTPCallbackAllCallersGone(t *testing.T) {
	svc := &slowService{}
	srv := httptest.NewServer(svc)
	defer srv.Close()
	h := newCallback(t, &HTTPCallback{URL: srv.URL + "/{token}", Timeout: 10 * time.Second})
	var wg sync.WaitGroup
	for i := range 40 {
		for range 2 { // two browsers per token
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				defer cancel()
				_, _ = h.Resolve(ctx, Query{Token: fmt.Sprintf("t%d", i)})
			})
		}
	}
	wg.Wait()
	deadline := time.Now().Add(2 * time.Second)
	for svc.inFlight.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d callback requests still in flight 2s after every browser left", svc.inFlight.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A later browser with the same token is not handed the cancelled call.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := h.Resolve(ctx, Query{Token: "t1"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a later caller got %v, want its own wait to time out", err)
	}
}

// TestHTTPCallbackMaxInFlight: lookups beyond MaxInFlight are refused at
// once; lookups of a token already in flight share its request.
func TestHTTPCallbackMaxInFlight(t *testing.T) {
	svc := &slowService{}
	srv := httptest.NewServer(svc)
	defer srv.Close()
	h := newCallback(t, &HTTPCallback{URL: srv.URL + "/{token}", Timeout: 10 * time.Second, MaxInFlight: 3})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 3 {
		go func() { _, _ = h.Resolve(ctx, Query{Token: fmt.Sprintf("t%d", i)}) }()
	}
	deadline := time.Now().Add(2 * time.Second)
	for svc.inFlight.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the first three lookups did not reach the service")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	_, err := h.Resolve(context.Background(), Query{Token: "t3"})
	if !errors.Is(err, ErrUnavailable) || time.Since(start) > time.Second {
		t.Fatalf("a fourth lookup: %v after %v, want ErrUnavailable at once", err, time.Since(start))
	}
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	if _, err := h.Resolve(short, Query{Token: "t0"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a lookup joining one in flight got %v, want to wait for it", err)
	}
}
