package admission_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbproxy"
	"github.com/vncgate/caddy-vnc-proxy/internal/vncdemo"
	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

// wait bounds every wait for an event; generous, since the tests share a
// loaded machine.
const wait = 15 * time.Second

// startVNC serves a vncdemo server on a loopback port until the test ends.
func startVNC(t *testing.T, password string) string {
	t.Helper()
	srv := &vncdemo.Server{Password: password}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	return l.Addr().String()
}

// startListener runs a TCP server whose connections go to handle, and
// are closed when the test ends.
func startListener(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// tokenFile is a real token file resolver over lines "token: target".
func tokenFile(t *testing.T, lines ...string) *tokenresolver.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vnc-tokens")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := tokenresolver.OpenFile(path, tokenresolver.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// resolverFunc is a Resolver of the test's making.
type resolverFunc func(ctx context.Context, q tokenresolver.Query) (tokenresolver.Target, error)

func (f resolverFunc) Resolve(ctx context.Context, q tokenresolver.Query) (tokenresolver.Target, error) {
	return f(ctx, q)
}

func tcp(addr string) tokenresolver.Target {
	return tokenresolver.Target{Network: "tcp", Address: addr}
}

// results counts the pipeline's metrics hooks.
type results struct {
	mu       sync.Mutex
	byResult map[string]int
	resolved int
}

func (r *results) metrics() admission.Metrics {
	return admission.Metrics{
		Result: func(server, result string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if server != "srv0" {
				result = "wrong server " + server
			}
			r.byResult[result]++
		},
		Resolved: func(string, time.Duration) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.resolved++
		},
	}
}

func (r *results) count(result string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byResult[result]
}

func newPipeline(t *testing.T, cfg admission.Config, state *admission.State) *admission.Pipeline {
	t.Helper()
	if state == nil {
		state = admission.NewState()
	}
	p, err := admission.New(cfg, state)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func request(token string) admission.Request {
	return admission.Request{Token: token, ClientIP: "192.0.2.10", Client: "192.0.2.10:40000", Server: "srv0",
		SelfOrigin: "https://console.example.com"}
}

// admitted admits req or fails the test; the console is released when
// the test ends.
func admitted(t *testing.T, p *admission.Pipeline, req admission.Request) *admission.Console {
	t.Helper()
	c, ref := p.Admit(context.Background(), req)
	if ref != nil {
		t.Fatalf("refused: %d %s (%v)", ref.Status, ref.Reason, ref.Err)
	}
	t.Cleanup(c.Abandon)
	return c
}

func refused(t *testing.T, p *admission.Pipeline, req admission.Request, status int, reason string) *admission.Refusal {
	t.Helper()
	c, ref := p.Admit(context.Background(), req)
	if ref == nil {
		c.Abandon()
		t.Fatalf("admitted, want %d %s", status, reason)
	}
	if ref.Status != status || ref.Reason != reason {
		t.Fatalf("refused %d %q (%v), want %d %q", ref.Status, ref.Reason, ref.Err, status, reason)
	}
	return ref
}

// TestRefusals: each refusal has its status, its short reason and its
// metrics result; none names the token or the target, and the log line
// carries the token's hash only.
func TestRefusals(t *testing.T) {
	const secret = "s3cret-token-value"
	vnc := startVNC(t, "")
	locked := startVNC(t, "right")
	notRFB := startListener(t, func(c net.Conn) {
		_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
		_, _ = io.Copy(io.Discard, c)
	})
	closed := closedPort(t)
	outside := filepath.Join(t.TempDir(), "vm.sock")
	file := tokenFile(t,
		secret+": "+vnc,
		"closed: "+closed,
		"notrfb: "+notRFB,
		"locked: "+locked,
		"elsewhere: 127.0.0.1:5900",
		"unixsock: unix:"+outside,
	)
	resolver := resolverFunc(func(ctx context.Context, q tokenresolver.Query) (tokenresolver.Target, error) {
		switch q.Token {
		case "down":
			return tokenresolver.Target{}, fmt.Errorf("%w: redis: connection refused", tokenresolver.ErrUnavailable)
		case "tok-exp-1":
			return tokenresolver.Target{}, tokenresolver.ErrExpired
		case "past":
			t := tcp(vnc)
			t.ExpiresAt = time.Now().Add(-time.Minute)
			return t, nil
		}
		return file.Resolve(ctx, q)
	})

	cases := []struct {
		name   string
		cfg    func(*admission.Config)
		req    func(*admission.Request)
		status int
		reason string
		result string
	}{
		{name: "no token", req: func(r *admission.Request) { r.Token = "" },
			status: http.StatusUnauthorized, reason: "missing token", result: "no_token"},
		{name: "other origin", req: func(r *admission.Request) { r.Origin = "https://evil.example" },
			status: http.StatusForbidden, reason: "origin not allowed", result: "origin_refused"},
		{name: "unlisted origin", cfg: func(c *admission.Config) { c.AllowedOrigins = []string{"https://portal.example"} },
			req:    func(r *admission.Request) { r.Origin = "https://console.example.com" },
			status: http.StatusForbidden, reason: "origin not allowed", result: "origin_refused"},
		{name: "malformed origin", req: func(r *admission.Request) { r.Origin = "null" },
			status: http.StatusForbidden, reason: "origin not allowed", result: "origin_refused"},
		{name: "unknown token", req: func(r *admission.Request) { r.Token = "nope" },
			status: http.StatusForbidden, reason: "invalid or expired token", result: "token_refused"},
		{name: "expired token", req: func(r *admission.Request) { r.Token = "tok-exp-1" },
			status: http.StatusForbidden, reason: "invalid or expired token", result: "token_refused"},
		{name: "token past its expires_at", req: func(r *admission.Request) { r.Token = "past" },
			status: http.StatusForbidden, reason: "invalid or expired token", result: "token_refused"},
		{name: "resolver down", req: func(r *admission.Request) { r.Token = "down" },
			status: http.StatusServiceUnavailable, reason: "token service unavailable", result: "resolver_unavailable"},
		{name: "target outside allow_targets", cfg: func(c *admission.Config) { c.AllowTargets = []string{"10.0.0.0/8"} },
			status: http.StatusForbidden, reason: "target not allowed", result: "target_refused"},
		{name: "port outside allow_targets", cfg: func(c *admission.Config) { c.AllowTargets = []string{"127.0.0.1:5900"} },
			status: http.StatusForbidden, reason: "target not allowed", result: "target_refused"},
		{name: "unix socket outside allow_targets", cfg: func(c *admission.Config) { c.AllowTargets = []string{"unix:/run/vnc/"} },
			req:    func(r *admission.Request) { r.Token = "unixsock" },
			status: http.StatusForbidden, reason: "target not allowed", result: "target_refused"},
		{name: "unreachable", req: func(r *admission.Request) { r.Token = "closed" },
			status: http.StatusBadGateway, reason: "VNC server unavailable", result: "target_unavailable"},
		{name: "not RFB", req: func(r *admission.Request) { r.Token = "notrfb" },
			status: http.StatusBadGateway, reason: "VNC server unavailable", result: "target_unavailable"},
		{name: "login refused", cfg: func(c *admission.Config) {
			c.VNCAuth, c.Credentials = true, rfb.Credentials{Password: "wrong"}
		}, req: func(r *admission.Request) { r.Token = "locked" },
			status: http.StatusBadGateway, reason: "VNC server unavailable", result: "target_unavailable"},
		{name: "no password for a locked server", cfg: func(c *admission.Config) { c.ViewOnly = true },
			req:    func(r *admission.Request) { r.Token = "locked" },
			status: http.StatusBadGateway, reason: "VNC server unavailable", result: "target_unavailable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			res := &results{byResult: map[string]int{}}
			cfg := admission.Config{Resolver: resolver, Logger: zap.New(core), Metrics: res.metrics(), DialTimeout: wait}
			if c.cfg != nil {
				c.cfg(&cfg)
			}
			state := admission.NewState()
			p := newPipeline(t, cfg, state)
			req := request(secret)
			if c.req != nil {
				c.req(&req)
			}
			ref := refused(t, p, req, c.status, c.reason)
			if ref.Result != c.result || res.count(c.result) != 1 {
				t.Errorf("result %q (counted %d), want %q", ref.Result, res.count(c.result), c.result)
			}
			for _, secretText := range []string{secret, vnc, locked, closed, notRFB, "127.0.0.1"} {
				if strings.Contains(ref.Reason, secretText) {
					t.Errorf("the reason %q names %q", ref.Reason, secretText)
				}
			}
			if !strings.HasPrefix(ref.Error(), ref.Reason) {
				t.Errorf("Error() %q does not begin with the reason", ref.Error())
			}
			if state.Consoles() != 0 {
				t.Errorf("a refused console is still counted: %d", state.Consoles())
			}
			lines := logs.FilterMessage("request refused").All()
			if len(lines) != 1 {
				t.Fatalf("%d refusal lines", len(lines))
			}
			fields := lines[0].ContextMap()
			if fields["status"] != int64(c.status) || fields["reason"] != c.reason || fields["client"] != req.Client {
				t.Errorf("log fields %v", fields)
			}
			if req.Token != "" && fields["token_hash"] != admission.TokenHash(req.Token) {
				t.Errorf("log token_hash %v, want %s", fields["token_hash"], admission.TokenHash(req.Token))
			}
			if line := fmt.Sprint(fields); strings.Contains(line, req.Token) && req.Token != "" {
				t.Errorf("the log line holds the token: %s", line)
			}
			if want := c.status >= 500; want != (lines[0].Level == zapcore.WarnLevel) {
				t.Errorf("logged at %v for %d", lines[0].Level, c.status)
			}
		})
	}
}

// TestAdmit: an admitted console is the VNC server's connection past its
// greeting, which comes with it; origins are allowed as configured.
func TestAdmit(t *testing.T) {
	vnc := startVNC(t, "")
	sock := filepath.Join(t.TempDir(), "vnc.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	unixVNC := &vncdemo.Server{}
	served := make(chan error, 1)
	go func() { served <- unixVNC.Serve(ul) }()
	t.Cleanup(func() {
		unixVNC.Close()
		<-served
	})
	file := tokenFile(t, "tok: "+vnc, "sock: unix:"+sock)
	cases := []struct {
		name  string
		cfg   func(*admission.Config)
		req   func(*admission.Request)
		check func(t *testing.T, c *admission.Console)
	}{
		{name: "no Origin (not a browser)"},
		{name: "same origin", req: func(r *admission.Request) { r.Origin = "HTTPS://Console.Example.com:443" }},
		{name: "listed origin", cfg: func(c *admission.Config) { c.AllowedOrigins = []string{"https://portal.example:8443"} },
			req: func(r *admission.Request) { r.Origin = "https://portal.example:8443" }},
		{name: "any origin", cfg: func(c *admission.Config) { c.AllowedOrigins = []string{"*"} },
			req: func(r *admission.Request) { r.Origin = "https://anywhere.example" }},
		{name: "allowed target", cfg: func(c *admission.Config) { c.AllowTargets = []string{"127.0.0.0/8:1-65535", "10.0.0.0/8"} }},
		{name: "allowed by name", cfg: func(c *admission.Config) { c.AllowTargets = []string{"localhost"} },
			req: func(r *admission.Request) { r.Token = "byname" }},
		{name: "unix socket", cfg: func(c *admission.Config) { c.AllowTargets = []string{"unix:" + filepath.Dir(sock)} },
			req: func(r *admission.Request) { r.Token = "sock" },
			check: func(t *testing.T, c *admission.Console) {
				if c.Target != "unix:"+sock {
					t.Errorf("target %q", c.Target)
				}
			}},
		{name: "raw protocol", cfg: func(c *admission.Config) { c.Protocol = admission.ProtocolRaw },
			check: func(t *testing.T, c *admission.Console) {
				if c.Greeting != nil {
					t.Fatalf("greeting %q read for protocol raw", c.Greeting)
				}
				g := make([]byte, 12)
				_ = c.Conn.SetReadDeadline(time.Now().Add(wait))
				if _, err := io.ReadFull(c.Conn, g); err != nil || string(g) != "RFB 003.008\n" {
					t.Fatalf("the connection starts with %q, %v", g, err)
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			port := vnc[strings.LastIndex(vnc, ":")+1:]
			resolver := resolverFunc(func(ctx context.Context, q tokenresolver.Query) (tokenresolver.Target, error) {
				if q.Token == "byname" {
					return tcp("localhost:" + port), nil
				}
				if q.ClientAddr != "192.0.2.10:40000" {
					return tokenresolver.Target{}, fmt.Errorf("%w: client %q", tokenresolver.ErrUnavailable, q.ClientAddr)
				}
				return file.Resolve(ctx, q)
			})
			cfg := admission.Config{Resolver: resolver}
			if c.cfg != nil {
				c.cfg(&cfg)
			}
			state := admission.NewState()
			p := newPipeline(t, cfg, state)
			req := request("tok")
			if c.req != nil {
				c.req(&req)
			}
			con := admitted(t, p, req)
			if con.TokenHash != admission.TokenHash(req.Token) || con.Login != nil || con.ViewOnly || !con.EndAt.IsZero() {
				t.Errorf("console %+v", con)
			}
			if c.check != nil {
				c.check(t, con)
			} else if string(con.Greeting) != "RFB 003.008\n" {
				t.Errorf("greeting %q", con.Greeting)
			}
			if state.Consoles() != 1 {
				t.Errorf("%d consoles counted, want 1", state.Consoles())
			}
			con.Release()
			con.Release()
			if state.Consoles() != 0 {
				t.Errorf("%d consoles counted after Release, want 0", state.Consoles())
			}
		})
	}
	if got := admission.TokenHash("tok"); len(got) != 12 || strings.Trim(got, "0123456789abcdef") != "" {
		t.Errorf("TokenHash %q is not 12 hex digits", got)
	}
}

// TestRFBAware: with a password in the token's record or in vnc_auth, or
// for a view-only console, the proxy logs in to the VNC server itself:
// the console comes past the SecurityResult, waiting for ClientInit, with
// no greeting for the browser.
func TestRFBAware(t *testing.T) {
	open := startVNC(t, "")
	locked := startVNC(t, "sesame")
	cases := []struct {
		name     string
		cfg      func(*admission.Config)
		target   tokenresolver.Target
		security uint32
		viewOnly bool
	}{
		{name: "token's password", target: tokenresolver.Target{Network: "tcp", Address: locked, Password: "sesame"},
			security: rfb.SecurityVNCAuth},
		{name: "vnc_auth", cfg: func(c *admission.Config) {
			c.VNCAuth, c.Credentials = true, rfb.Credentials{Password: "sesame"}
		}, target: tcp(locked), security: rfb.SecurityVNCAuth},
		{name: "token's password wins", cfg: func(c *admission.Config) {
			c.VNCAuth, c.Credentials = true, rfb.Credentials{Password: "wrong", Username: "u"}
		}, target: tokenresolver.Target{Network: "tcp", Address: locked, Password: "sesame", Username: "v"},
			security: rfb.SecurityVNCAuth},
		{name: "view_only", cfg: func(c *admission.Config) { c.ViewOnly = true }, target: tcp(open),
			security: rfb.SecurityNone, viewOnly: true},
		{name: "token's view_only", target: tokenresolver.Target{Network: "tcp", Address: open, ViewOnly: true},
			security: rfb.SecurityNone, viewOnly: true},
		{name: "clipboard", cfg: func(c *admission.Config) { c.Clipboard = rfbproxy.Clipboard{MaxSize: 100} }, target: tcp(open),
			security: rfb.SecurityNone},
		{name: "token's clipboard", target: tokenresolver.Target{Network: "tcp", Address: open, Clipboard: "none"},
			security: rfb.SecurityNone},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := admission.Config{Resolver: resolverFunc(func(context.Context, tokenresolver.Query) (tokenresolver.Target, error) {
				return c.target, nil
			})}
			if c.cfg != nil {
				c.cfg(&cfg)
			}
			con := admitted(t, newPipeline(t, cfg, nil), request("tok"))
			if con.Login == nil || con.Login.Security != c.security || con.Greeting != nil || con.ViewOnly != c.viewOnly {
				t.Fatalf("console login %v, greeting %q, view-only %v", con.Login, con.Greeting, con.ViewOnly)
			}
			// The VNC server waits for ClientInit, and answers it with
			// ServerInit.
			_ = con.Conn.SetDeadline(time.Now().Add(wait))
			if _, err := con.Conn.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			init := make([]byte, 24)
			if _, err := io.ReadFull(con.Conn, init); err != nil {
				t.Fatalf("no ServerInit after the login: %v", err)
			}
		})
	}
	// View-only needs the proxy to speak RFB: New refuses it for raw.
	if _, err := admission.New(admission.Config{Resolver: resolverFunc(nil), ViewOnly: true, Protocol: admission.ProtocolRaw}, admission.NewState()); err == nil {
		t.Error("view_only with protocol raw accepted")
	}
}

// TestFailedTokenRate: a client over its failed-token rate is answered
// 429 with Retry-After before its token is looked up, whatever the token;
// other clients are not held back; a client's IPv6 /64 counts as one.
func TestFailedTokenRate(t *testing.T) {
	vnc := startVNC(t, "")
	var lookups sync.Map
	file := tokenFile(t, "good: "+vnc)
	resolver := resolverFunc(func(ctx context.Context, q tokenresolver.Query) (tokenresolver.Target, error) {
		n, _ := lookups.LoadOrStore(q.ClientAddr, new(int))
		*n.(*int)++
		return file.Resolve(ctx, q)
	})
	p := newPipeline(t, admission.Config{Resolver: resolver, FailedTokenRate: admission.Rate{N: 2, Per: time.Hour}}, nil)
	for _, client := range []struct{ ip, other string }{{"192.0.2.10", "192.0.2.11"}, {"2001:db8:1:2::10", "2001:db8:1:3::10"}} {
		req := request("bad")
		req.ClientIP, req.Client = client.ip, net.JoinHostPort(client.ip, "1")
		for range 2 {
			refused(t, p, req, http.StatusForbidden, "invalid or expired token")
		}
		ref := refused(t, p, req, http.StatusTooManyRequests, "too many failed tokens")
		if ref.RetryAfter <= 0 || ref.RetryAfter > time.Hour || ref.Result != "rate_limited" {
			t.Errorf("%s: Retry-After %v, result %q", client.ip, ref.RetryAfter, ref.Result)
		}
		// A good token does not get past the limit either.
		req.Token = "good"
		refused(t, p, req, http.StatusTooManyRequests, "too many failed tokens")
		n, _ := lookups.Load(req.Client)
		if *n.(*int) != 2 {
			t.Errorf("%s: %d lookups, want 2: a limited client's token is not looked up", client.ip, *n.(*int))
		}
		// The same /64 is the same client; another is not.
		if strings.Contains(client.ip, ":") {
			same := request("good")
			same.ClientIP = "2001:db8:1:2::99"
			refused(t, p, same, http.StatusTooManyRequests, "too many failed tokens")
		}
		other := request("good")
		other.ClientIP = client.other
		admitted(t, p, other).Release()
	}
}

// TestConsoleLimits: max_sessions_per_token answers 429, max_sessions 503
// with Retry-After 10s; a released or abandoned console frees its place.
func TestConsoleLimits(t *testing.T) {
	vnc := startVNC(t, "")
	file := tokenFile(t, "a: "+vnc, "b: "+vnc, "c: "+vnc)
	state := admission.NewState()
	p := newPipeline(t, admission.Config{Resolver: file, MaxSessions: 2, MaxSessionsPerToken: 1}, state)

	a := admitted(t, p, request("a"))
	ref := refused(t, p, request("a"), http.StatusTooManyRequests, "too many consoles for this token")
	if ref.Result != "too_many_for_token" {
		t.Errorf("result %q", ref.Result)
	}
	b := admitted(t, p, request("b"))
	ref = refused(t, p, request("c"), http.StatusServiceUnavailable, "too many consoles")
	if ref.RetryAfter != 10*time.Second || ref.Result != "too_many_consoles" {
		t.Errorf("Retry-After %v, result %q; want 10s", ref.RetryAfter, ref.Result)
	}
	if state.Consoles() != 2 {
		t.Fatalf("%d consoles counted, want 2", state.Consoles())
	}
	// Release and Abandon give back the place once, however often called.
	a.Release()
	a.Release()
	b.Abandon()
	b.Release()
	if state.Consoles() != 0 {
		t.Fatalf("%d consoles counted after both ended, want 0", state.Consoles())
	}
	if _, err := b.Conn.Write([]byte{1}); err == nil {
		t.Error("an abandoned console's connection is still open")
	}
	admitted(t, p, request("a"))
	admitted(t, p, request("c"))
	if state.Consoles() != 2 {
		t.Fatalf("%d consoles counted, want 2", state.Consoles())
	}
}

// TestStateAcrossReload: the pipeline of a new config given the old
// one's State keeps its console counts and its failed-token table, and a
// changed rate applies to the kept table.
func TestStateAcrossReload(t *testing.T) {
	vnc := startVNC(t, "")
	file := tokenFile(t, "a: "+vnc, "b: "+vnc)
	state := admission.NewState()
	old := newPipeline(t, admission.Config{Resolver: file, MaxSessions: 1, FailedTokenRate: admission.Rate{N: 1, Per: time.Hour}}, state)
	refused(t, old, request("nope"), http.StatusForbidden, "invalid or expired token")
	refused(t, old, request("b"), http.StatusTooManyRequests, "too many failed tokens")
	other := request("a")
	other.ClientIP = "198.51.100.7"
	live := admitted(t, old, other)

	// The reload: the same limits, the same state.
	reloaded := newPipeline(t, admission.Config{Resolver: file, MaxSessions: 1, FailedTokenRate: admission.Rate{N: 1, Per: time.Hour}}, state)
	refused(t, reloaded, request("b"), http.StatusTooManyRequests, "too many failed tokens")
	other.Token = "b"
	refused(t, reloaded, other, http.StatusServiceUnavailable, "too many consoles")
	// The old config's console ends: the new one has room.
	live.Release()
	admitted(t, reloaded, other).Release()

	// A faster rate applies to the client already in the table: it may
	// try again as soon as the new rate refills its allowance.
	faster := newPipeline(t, admission.Config{Resolver: file, FailedTokenRate: admission.Rate{N: 1000, Per: time.Second}}, state)
	deadline := time.Now().Add(wait)
	for {
		c, ref := faster.Admit(context.Background(), request("b"))
		if ref == nil {
			c.Release()
			break
		}
		if ref.Status != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("refused %d %s under the faster rate", ref.Status, ref.Reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// No rate at all: nobody is held back.
	off := newPipeline(t, admission.Config{Resolver: file}, state)
	for range 3 {
		refused(t, off, request("nope"), http.StatusForbidden, "invalid or expired token")
	}
	admitted(t, off, request("b")).Release()
}

// TestClientGone: a client that leaves while the resolver or the VNC
// server is slow gets no answer (Status 0), and its place is given back.
func TestClientGone(t *testing.T) {
	// A VNC server that accepts and never greets.
	silent := startListener(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	cases := []struct {
		name     string
		resolver tokenresolver.Resolver
	}{
		{name: "slow resolver", resolver: resolverFunc(func(ctx context.Context, _ tokenresolver.Query) (tokenresolver.Target, error) {
			<-ctx.Done()
			return tokenresolver.Target{}, fmt.Errorf("%w: %w", tokenresolver.ErrUnavailable, ctx.Err())
		})},
		{name: "slow VNC server", resolver: resolverFunc(func(context.Context, tokenresolver.Query) (tokenresolver.Target, error) {
			return tcp(silent), nil
		})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := &results{byResult: map[string]int{}}
			state := admission.NewState()
			p := newPipeline(t, admission.Config{Resolver: c.resolver, DialTimeout: time.Minute, Metrics: res.metrics()}, state)
			ctx, cancel := context.WithCancel(context.Background())
			refusedCh := make(chan *admission.Refusal, 1)
			go func() {
				con, ref := p.Admit(ctx, request("tok"))
				if con != nil {
					con.Abandon()
				}
				refusedCh <- ref
			}()
			// Admit is waiting: the console is counted.
			deadline := time.Now().Add(wait)
			for state.Consoles() != 1 {
				if time.Now().After(deadline) {
					t.Fatal("the request did not reach the pipeline")
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			select {
			case ref := <-refusedCh:
				if ref == nil || ref.Status != 0 || ref.Result != "client_gone" {
					t.Fatalf("got %+v, want status 0 client_gone", ref)
				}
			case <-time.After(wait):
				t.Fatal("Admit did not return when the client left")
			}
			if state.Consoles() != 0 || res.count("client_gone") != 1 {
				t.Errorf("%d consoles counted, %d client_gone", state.Consoles(), res.count("client_gone"))
			}
		})
	}
	// Without a client that leaves, the silent VNC server costs the dial
	// timeout and is a 502.
	p := newPipeline(t, admission.Config{Resolver: cases[1].resolver, DialTimeout: 200 * time.Millisecond}, nil)
	start := time.Now()
	refused(t, p, request("tok"), http.StatusBadGateway, "VNC server unavailable")
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("refused after %v, before the dial timeout", d)
	}
}

// TestSessionEnd: a console ends by itself at its token's expiry
// (end_at_expiry) or after max_session_duration, whichever comes first.
func TestSessionEnd(t *testing.T) {
	vnc := startVNC(t, "")
	soon, later := time.Now().Add(30*time.Minute), time.Now().Add(5*time.Hour)
	cases := []struct {
		name        string
		expiresAt   time.Time
		endAtExpiry bool
		maxDuration time.Duration
		want        time.Time // zero: never
		reason      string
	}{
		{name: "neither"},
		{name: "expiry known but not enforced", expiresAt: soon},
		{name: "end at expiry", expiresAt: soon, endAtExpiry: true, want: soon, reason: admission.ReasonTokenExpired},
		{name: "end at expiry without one", endAtExpiry: true},
		{name: "time limit", maxDuration: time.Hour, reason: admission.ReasonTimeLimit},
		{name: "expiry first", expiresAt: soon, endAtExpiry: true, maxDuration: time.Hour, want: soon, reason: admission.ReasonTokenExpired},
		{name: "time limit first", expiresAt: later, endAtExpiry: true, maxDuration: time.Hour, reason: admission.ReasonTimeLimit},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			target := tcp(vnc)
			target.ExpiresAt = c.expiresAt
			p := newPipeline(t, admission.Config{EndAtExpiry: c.endAtExpiry, MaxSessionDuration: c.maxDuration,
				Resolver: resolverFunc(func(context.Context, tokenresolver.Query) (tokenresolver.Target, error) { return target, nil })}, nil)
			before := time.Now()
			con := admitted(t, p, request("tok"))
			after := time.Now()
			if !con.ExpiresAt.Equal(c.expiresAt) || con.EndReason != c.reason {
				t.Fatalf("expires %v, ends for %q; want %v, %q", con.ExpiresAt, con.EndReason, c.expiresAt, c.reason)
			}
			switch {
			case c.reason == admission.ReasonTimeLimit:
				if con.EndAt.Before(before.Add(c.maxDuration)) || con.EndAt.After(after.Add(c.maxDuration)) {
					t.Errorf("ends at %v, want %v after admission", con.EndAt, c.maxDuration)
				}
			case !con.EndAt.Equal(c.want):
				t.Errorf("ends at %v, want %v", con.EndAt, c.want)
			}
		})
	}
}

// TestNewRefusesBadConfigs: what a pipeline cannot run with is an error at
// New, not a surprise at the first console.
func TestNewRefusesBadConfigs(t *testing.T) {
	r := resolverFunc(nil)
	for name, cfg := range map[string]admission.Config{
		"no resolver":               {},
		"negative dial timeout":     {Resolver: r, DialTimeout: -time.Second},
		"negative duration":         {Resolver: r, MaxSessionDuration: -time.Second},
		"negative max_sessions":     {Resolver: r, MaxSessions: -1},
		"negative per token":        {Resolver: r, MaxSessionsPerToken: -1},
		"vnc_auth for raw":          {Resolver: r, VNCAuth: true, Protocol: admission.ProtocolRaw},
		"view_only for serial":      {Resolver: r, ViewOnly: true, Protocol: admission.ProtocolSerial},
		"clipboard for raw":         {Resolver: r, Clipboard: rfbproxy.Clipboard{NoPaste: true}, Protocol: admission.ProtocolRaw},
		"unknown protocol":          {Resolver: r, Protocol: "telnet"},
		"bad origin":                {Resolver: r, AllowedOrigins: []string{"console.example.com"}},
		"origin with a path":        {Resolver: r, AllowedOrigins: []string{"https://console.example.com/vnc"}},
		"bad allow_targets":         {Resolver: r, AllowTargets: []string{"10.0.0.0/8:0"}},
		"rate without a period":     {Resolver: r, FailedTokenRate: admission.Rate{N: 5}},
		"negative rate":             {Resolver: r, FailedTokenRate: admission.Rate{N: -1, Per: time.Second}},
		"relative unix allow_rules": {Resolver: r, AllowTargets: []string{"unix:run/vnc"}},
	} {
		if _, err := admission.New(cfg, admission.NewState()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	p := newPipeline(t, admission.Config{Resolver: r}, nil)
	if p.DialTimeout() != admission.DefaultDialTimeout {
		t.Errorf("dial timeout %v, want the default", p.DialTimeout())
	}
	if err := admission.CheckTargetRule("10.0.0.0/8:5900-5999"); err != nil {
		t.Error(err)
	}
	if err := admission.CheckTargetRule("ftp://x"); err == nil {
		t.Error("CheckTargetRule accepted a URL")
	}
}

// TestNormalizeOrigin: origins compare as scheme://host[:port] in lower
// case, without a default port.
func TestNormalizeOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://Console.Example.com":      "https://console.example.com",
		"https://console.example.com:443":  "https://console.example.com",
		"http://console.example.com:80/":   "http://console.example.com",
		"http://console.example.com:8080":  "http://console.example.com:8080",
		"https://[2001:DB8::1]:443":        "https://[2001:db8::1]",
		"https://[2001:db8::1]:8443":       "https://[2001:db8::1]:8443",
		"https://console.example.com/a":    "",
		"https://u@console.example.com":    "",
		"https://console.example.com/?q=1": "",
		"console.example.com":              "",
		"null":                             "",
	} {
		got, err := admission.NormalizeOrigin(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("NormalizeOrigin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestRefuseNotUpgrade: a door's own refusal is logged and counted like
// the pipeline's.
func TestRefuseNotUpgrade(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	res := &results{byResult: map[string]int{}}
	p := newPipeline(t, admission.Config{Resolver: resolverFunc(nil), Logger: zap.New(core), Metrics: res.metrics()}, nil)
	ref := admission.RefuseNotUpgrade(errors.New("no Upgrade header"))
	if ref.Status != http.StatusBadRequest || ref.Result != "bad_request" || !errors.Is(ref, ref.Err) {
		t.Fatalf("%+v", ref)
	}
	p.Refused(request("tok"), ref)
	if logs.FilterMessage("request refused").Len() != 1 || res.count("bad_request") != 1 {
		t.Error("the door's refusal was not logged and counted")
	}
}
