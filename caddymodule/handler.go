// Package caddymodule is the Caddy side of caddy-vnc-proxy: the vnc_proxy
// HTTP handler, its Caddyfile syntax, the Caddy modules that wrap the token
// resolvers of package tokenresolver, and the handler's metrics.
package caddymodule

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbproxy"
	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

func init() {
	caddy.RegisterModule(Handler{})
	// Consoles outlive the config that started them; one that survived a
	// reload to a config without vnc_proxy still gets its 1001 on exit.
	caddy.OnExit(func(context.Context) {
		console.Sessions.CloseAll(websocket.CloseGoingAway, "server shutting down")
	})
}

// Defaults of the handler's options.
const (
	defaultDialTimeout    = 5 * time.Second
	defaultMaxMessageSize = 1 << 20
)

// Handler is the vnc_proxy HTTP handler. It takes a token from a WebSocket
// upgrade request, asks a resolver which VNC server the token stands for,
// dials that server and checks that it speaks RFB, and only then upgrades the
// request and relays the RFB byte stream both ways.
//
// Before the upgrade every failure is a plain HTTP response: 400 for a request
// that is not a WebSocket upgrade (HTTP/1.1) or extended CONNECT (HTTP/2,
// HTTP/3), 401 without a token, 403 for an unknown, expired or used token,
// a refused Origin or target, 429 and 503 beyond the rate and console
// limits, 503 when the resolver cannot answer, 502 when the VNC server
// cannot be reached or does not speak RFB.
type Handler struct {
	// The token resolver: which VNC server a token stands for. Required.
	// Modules in the namespace http.vnc_proxy.resolvers, chosen by "source":
	// file, http, redis, jwt or nova.
	ResolverRaw json.RawMessage `json:"resolver,omitempty" caddy:"namespace=http.vnc_proxy.resolvers inline_key=source"`

	// Where the token comes from, as a placeholder, for example
	// "{http.request.header.X-Console-Token}". Default: the query parameter
	// "token", else the cookie "token".
	Token string `json:"token,omitempty"`

	// Origins (scheme://host[:port]) whose pages may open consoles; "*"
	// allows any. A request without an Origin header is not from a browser
	// and is always allowed. Default: only the request's own origin: its
	// Host, with https over TLS (or when a trusted proxy says so in
	// X-Forwarded-Proto) and http otherwise, default ports ignored.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`

	// How long dialing the VNC server and receiving its RFB greeting may
	// take. Default: 5s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// How often the proxy pings the browser; a browser that answers neither
	// ping nor data within two intervals is gone and its session ends. Zero
	// disables pings. Default: 30s.
	PingInterval *caddy.Duration `json:"ping_interval,omitempty"`

	// A session in which no bytes move either way for this long ends.
	// Default: 0 (no idle timeout).
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// The largest WebSocket message accepted from the browser, in bytes; a
	// larger one ends the session with close code 1009. Default: 1048576 (1 MiB).
	MaxMessageSize int64 `json:"max_message_size,omitempty"`

	// Whether the VNC server must greet with "RFB xxx.yyy\n" before the
	// browser's request is upgraded. Default: true.
	CheckRFB *bool `json:"check_rfb,omitempty"`

	// The VNC servers tokens may point at: CIDRs or IP addresses, host
	// names, each with an optional :port or :port-port (IPv6 in brackets
	// then), and unix:/dir/ for sockets under a directory. IP ranges are
	// checked on the address actually dialed, after DNS, so a name cannot
	// rebind past them; a host name entry allows that name as the token
	// gives it. A target outside the list is refused with 403 before any
	// connection is made. Default: any target.
	AllowTargets []string `json:"allow_targets,omitempty"`

	// How many unknown or expired tokens one client may present, as
	// "<n>/<duration>" (e.g. "10/1m"): beyond it, requests from that
	// client are answered 429 with Retry-After, before their token is
	// looked up, until the rate allows another. Clients are Caddy's client
	// IPs (trusted_proxies apply), IPv6 counted per /64; at most 10,000 are
	// tracked. Default: no limit.
	FailedTokenRate string `json:"failed_token_rate,omitempty"`

	// The proxy logs in to the VNC server itself and offers the browser
	// security None, so the browser never sees a VNC credential; with tls,
	// it reaches VNC servers that require VeNCrypt X.509. Default: off
	// (the browser does the VNC server's authentication itself), unless a
	// token's record carries a password or the console is view-only.
	VNCAuth *VNCAuth `json:"vnc_auth,omitempty"`

	// Every console of this handler is view-only: the proxy drops the
	// browser's input (keys, pointer, clipboard, power and resize requests)
	// and forces ClientInit's shared flag on. A token's "view_only": true
	// makes one console view-only. Default: false.
	ViewOnly bool `json:"view_only,omitempty"`

	// How many consoles this handler relays at once; beyond it, a console
	// request gets 503 "too many consoles" with Retry-After, before its
	// token is looked up. Requests being opened count too, and so do the
	// live consoles of earlier configs (a reload keeps the count of the
	// handler at the same place among the config's vnc_proxy handlers).
	// Default: 0 (no limit).
	MaxSessions int `json:"max_sessions,omitempty"`

	// How many live consoles one token may have at once; beyond it, 429
	// "too many consoles for this token", before the token is looked up (so
	// a one_time token is not used up). Counted like max_sessions. Default:
	// 0 (no limit).
	MaxSessionsPerToken int `json:"max_sessions_per_token,omitempty"`

	// A live console ends, with close code 1008 "token expired", when its
	// token expires: the expires_at, JWT exp or Redis TTL its resolver
	// reported. Default: false (the token is checked when the console
	// opens only).
	EndAtExpiry bool `json:"end_at_expiry,omitempty"`

	// A console ends, with close code 1008 "session time limit", this long
	// after it opened. Default: 0 (no limit).
	MaxSessionDuration caddy.Duration `json:"max_session_duration,omitempty"`

	resolver       tokenresolver.Resolver
	count          *consoleCount
	logger         *zap.Logger
	upgrader       websocket.Upgrader
	allowedOrigins map[string]bool
	anyOrigin      bool
	dialer         net.Dialer
	pingInterval   time.Duration
	checkRFB       bool
	credentials    rfbproxy.Credentials
	targets        targetPolicy
	failedTokens   *failedTokens
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.vnc_proxy",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up the handler and loads its resolver.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}

	if h.ResolverRaw == nil {
		return errors.New("a resolver is required (resolver file|http|redis|jwt|nova ...)")
	}
	mod, err := ctx.LoadModule(h, "ResolverRaw")
	if err != nil {
		return fmt.Errorf("loading resolver: %w", err)
	}
	resolver, ok := mod.(tokenresolver.Resolver)
	if !ok {
		return fmt.Errorf("module %T is not a token resolver", mod)
	}
	h.resolver = resolver

	if h.DialTimeout < 0 || h.IdleTimeout < 0 || (h.PingInterval != nil && *h.PingInterval < 0) {
		return errors.New("durations must not be negative")
	}
	if h.MaxMessageSize < 0 {
		return errors.New("max_message_size must not be negative")
	}
	if h.MaxSessions < 0 || h.MaxSessionsPerToken < 0 || h.MaxSessionDuration < 0 {
		return errors.New("max_sessions, max_sessions_per_token and max_session_duration must not be negative")
	}
	h.count = countFor(ctx)
	if h.DialTimeout == 0 {
		h.DialTimeout = caddy.Duration(defaultDialTimeout)
	}
	h.pingInterval = console.DefaultPingInterval
	if h.PingInterval != nil {
		h.pingInterval = time.Duration(*h.PingInterval)
	}
	if h.MaxMessageSize == 0 {
		h.MaxMessageSize = defaultMaxMessageSize
	}
	h.checkRFB = h.CheckRFB == nil || *h.CheckRFB
	h.dialer = net.Dialer{Timeout: time.Duration(h.DialTimeout)}
	for _, a := range h.AllowTargets {
		rule, err := parseTargetRule(a)
		if err != nil {
			return err
		}
		h.targets = append(h.targets, rule)
	}
	if h.targets != nil {
		h.dialer.ControlContext = h.targets.control
	}
	if h.FailedTokenRate != "" {
		if h.failedTokens, err = parseFailedTokenRate(h.FailedTokenRate); err != nil {
			return err
		}
	}
	if h.ViewOnly && !h.checkRFB {
		return errors.New("view_only needs check_rfb on: the proxy speaks RFB with both sides")
	}
	if err := h.provisionVNCAuth(); err != nil {
		return err
	}

	h.allowedOrigins = make(map[string]bool, len(h.AllowedOrigins))
	for _, o := range h.AllowedOrigins {
		if o == "*" {
			h.anyOrigin = true
			continue
		}
		norm, err := normalizeOrigin(o)
		if err != nil {
			return fmt.Errorf("allowed_origins: %w", err)
		}
		h.allowedOrigins[norm] = true
	}

	h.upgrader = websocket.Upgrader{
		// The Origin was checked before the target was dialed.
		CheckOrigin:  func(*http.Request) bool { return true },
		Subprotocols: []string{"binary"},
		// Frame headers and small messages only: larger payloads are read
		// straight into the relay's buffer. An idle session holds this one.
		ReadBufferSize: 512,
		// The session writes data frames itself, header and payload in one
		// write from its relay buffer; gorilla writes only the handshake
		// and control frames, which need no write buffer of their own.
		WriteBufferSize: 512,
		WriteBufferPool: console.WriteBufferPool,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			http.Error(w, "bad WebSocket handshake", status)
		},
	}
	return nil
}

// Cleanup keeps live consoles running across a config reload; when the
// process exits it ends them with close code 1001.
func (h *Handler) Cleanup() error {
	if caddy.Exiting() {
		console.Sessions.CloseAll(websocket.CloseGoingAway, "server shutting down")
	}
	return nil
}

// ServeHTTP checks the request, resolves its token, dials the VNC server and
// hands the upgraded connection to a session. Over HTTP/1.1 the session runs
// on after ServeHTTP returns; over HTTP/2 and HTTP/3 (extended CONNECT) its
// stream is the request's, and ServeHTTP returns when the session ends.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if err := checkUpgradeRequest(r); err != nil {
		return h.refuse(w, r, http.StatusBadRequest, "not a WebSocket upgrade request", "bad_request", err)
	}
	if !h.originAllowed(r) {
		return h.refuse(w, r, http.StatusForbidden, "origin not allowed", "origin_refused", nil)
	}
	token := h.token(r)
	if token == "" {
		return h.refuse(w, r, http.StatusUnauthorized, "missing token", "no_token", nil)
	}

	clientAddr := clientAddress(r)
	if h.failedTokens != nil {
		if wait := h.failedTokens.retryAfter(clientIP(r)); wait > 0 {
			w.Header().Set("Retry-After", retryAfterSeconds(wait))
			return h.refuse(w, r, http.StatusTooManyRequests, "too many failed tokens", "rate_limited", nil)
		}
	}
	hash := tokenHash(token)
	release, err := h.count.reserve(hash, h.MaxSessions, h.MaxSessionsPerToken)
	switch {
	case errors.Is(err, errTooManyConsolesForToken):
		return h.refuse(w, r, http.StatusTooManyRequests, "too many consoles for this token", "too_many_for_token", err, zap.String("token_hash", hash))
	case err != nil:
		w.Header().Set("Retry-After", retryAfterSeconds(limitRetryAfter))
		return h.refuse(w, r, http.StatusServiceUnavailable, "too many consoles", "too_many_consoles", err, zap.String("token_hash", hash))
	}
	// The session releases it when it ends; until it starts, the request.
	started := false
	defer func() {
		if !started {
			release()
		}
	}()

	start := time.Now()
	target, err := h.resolver.Resolve(r.Context(), tokenresolver.Query{
		Token:      token,
		ClientAddr: clientAddr,
		Origin:     r.Header.Get("Origin"),
	})
	resolveDuration.WithLabelValues(serverName(r)).Observe(time.Since(start).Seconds())
	if err == nil && target.Expired(time.Now()) {
		err = tokenresolver.ErrExpired
	}
	if err != nil {
		switch {
		case errors.Is(err, tokenresolver.ErrNotFound), errors.Is(err, tokenresolver.ErrExpired):
			if h.failedTokens != nil {
				h.failedTokens.failed(clientIP(r))
			}
			return h.refuse(w, r, http.StatusForbidden, "invalid or expired token", "token_refused", err, tokenHashField(token))
		case r.Context().Err() != nil:
			// The browser went away while the resolver worked.
			return nil
		default:
			return h.refuse(w, r, http.StatusServiceUnavailable, "token service unavailable", "resolver_unavailable", err, tokenHashField(token))
		}
	}

	conn, greeting, login, err := h.dialTarget(r.Context(), target, h.rfbAware(target))
	if err != nil {
		if errors.Is(err, errTargetNotAllowed) {
			return h.refuse(w, r, http.StatusForbidden, "target not allowed", "target_refused", err,
				tokenHashField(token), zap.Stringer("target", target))
		}
		if r.Context().Err() != nil {
			// The browser went away while the VNC server was slow.
			return nil
		}
		return h.refuse(w, r, http.StatusBadGateway, "VNC server unavailable", "target_unavailable", err,
			tokenHashField(token), zap.Stringer("target", target))
	}

	var (
		ws     *websocket.Conn
		stream *console.Stream
	)
	if r.Method == http.MethodConnect {
		ws, stream, err = h.upgradeStream(w, r)
	} else {
		ws, err = h.upgrader.Upgrade(hijackWriter{w}, r, nil)
	}
	if err != nil {
		// The upgrader has answered the browser already.
		conn.Close()
		sessionsTotal.WithLabelValues(serverName(r), "bad_request").Inc()
		h.logger.Debug("upgrade failed", zap.String("client", clientAddr), zap.Error(err))
		return nil
	}
	server := serverName(r)
	sessionsTotal.WithLabelValues(server, "started").Inc()

	endAt, endReason := h.sessionEnd(time.Now(), target.ExpiresAt)
	s := console.New(ws, conn, console.Config{
		Logger:           h.logger,
		PingInterval:     h.pingInterval,
		IdleTimeout:      time.Duration(h.IdleTimeout),
		MaxMessageSize:   h.MaxMessageSize,
		HandshakeTimeout: time.Duration(h.DialTimeout),
		Metrics: console.Metrics{
			BytesToBrowser: bytesTotal.WithLabelValues(server, "to_browser"),
			BytesToTarget:  bytesTotal.WithLabelValues(server, "to_target"),
			Active:         sessionsActive.WithLabelValues(server),
			Duration:       sessionDuration.WithLabelValues(server),
		},
		Target:    target,
		Client:    clientAddr,
		TokenHash: hash,
		Server:    server,
		Login:     login,
		ViewOnly:  h.viewOnly(target),
		EndAt:     endAt,
		EndReason: endReason,
		Release:   release,
	})
	if err := s.Start(greeting); err != nil {
		h.logger.Debug("session did not start", zap.String("session", s.ID()), zap.Error(err))
	} else {
		started = true
	}
	if stream != nil {
		// The stream lives as long as this request.
		unhold := holdStream()
		defer unhold()
		stream.Serve()
	}
	return nil
}

// refuse answers a request that cannot be proxied with a short plain-text
// reason. The reason never contains the token, the target or err's text;
// err and fields go to the log.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, status int, reason, result string, err error, fields ...zap.Field) error {
	sessionsTotal.WithLabelValues(serverName(r), result).Inc()
	level := zap.InfoLevel
	if status >= 500 {
		level = zap.WarnLevel
	}
	if ce := h.logger.Check(level, "request refused"); ce != nil {
		fields = append(fields,
			zap.Int("status", status),
			zap.String("reason", reason),
			zap.String("client", clientAddress(r)))
		if err != nil {
			fields = append(fields, zap.Error(err))
		}
		ce.Write(fields...)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, reason+"\n")
	return nil
}

// checkUpgradeRequest reports why r is not a WebSocket upgrade that the
// upgrader would accept, so that such requests are refused before a token
// is resolved (and perhaps used up).
func checkUpgradeRequest(r *http.Request) error {
	if r.Method == http.MethodConnect {
		if !isExtendedConnect(r) {
			return errors.New("CONNECT without :protocol websocket")
		}
		if r.Header.Get("Sec-WebSocket-Version") != "13" {
			return errors.New("Sec-WebSocket-Version is not 13")
		}
		return nil
	}
	if r.Method != http.MethodGet {
		return fmt.Errorf("method %s is not GET", r.Method)
	}
	if !websocket.IsWebSocketUpgrade(r) {
		return errors.New("missing Connection: Upgrade and Upgrade: websocket")
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		return errors.New("Sec-WebSocket-Version is not 13")
	}
	if r.Header.Get("Sec-WebSocket-Key") == "" {
		return errors.New("missing Sec-WebSocket-Key")
	}
	return nil
}

// token returns the request's token: from the configured placeholder, or
// else the query parameter "token", or else the cookie "token".
func (h *Handler) token(r *http.Request) string {
	if h.Token != "" {
		repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		if repl == nil {
			return ""
		}
		return repl.ReplaceKnown(h.Token, "")
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if c, err := r.Cookie("token"); err == nil {
		return c.Value
	}
	return ""
}

// originAllowed reports whether the page that opened the WebSocket may use
// consoles here.
func (h *Handler) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if h.anyOrigin {
		return true
	}
	norm, err := normalizeOrigin(origin)
	if err != nil {
		return false
	}
	if len(h.allowedOrigins) == 0 {
		self, err := normalizeOrigin(requestScheme(r) + "://" + r.Host)
		return err == nil && norm == self
	}
	return h.allowedOrigins[norm]
}

// requestScheme is the scheme the browser used: https over TLS, or what a
// trusted proxy (Caddy's trusted_proxies) says in X-Forwarded-Proto.
func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool); trusted {
		if p := strings.ToLower(r.Header.Get("X-Forwarded-Proto")); p == "https" || p == "http" {
			return p
		}
	}
	return "http"
}

// normalizeOrigin returns scheme://host[:port] in lower case, without a
// default port.
func normalizeOrigin(origin string) (string, error) {
	u, err := url.Parse(origin)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("origin %q is not scheme://host[:port]", origin)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return "", fmt.Errorf("origin %q has more than scheme://host[:port]", origin)
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host, nil
}

// dialTarget connects to the VNC server and, when check_rfb is on or the
// console is RFB-aware, reads and checks its greeting; an RFB-aware console
// then logs in (login is its result). One deadline, dial_timeout from now,
// bounds all of it, and the wait ends when the browser leaves. It returns
// the greeting of a transparent console, for the browser to get first.
func (h *Handler) dialTarget(ctx context.Context, t tokenresolver.Target, aware bool) (net.Conn, []byte, *rfbproxy.Result, error) {
	deadline := time.Now().Add(time.Duration(h.DialTimeout))
	dialer := h.dialer
	dialer.Deadline = deadline
	dialCtx, err := h.targets.checkTarget(ctx, t)
	if err != nil {
		return nil, nil, nil, err
	}
	raw, err := dialer.DialContext(dialCtx, t.Network, t.Address)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dialing target: %w", err)
	}
	if !h.checkRFB && !aware {
		return raw, nil, nil, nil
	}
	_ = raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Now()) })
	conn, greeting, login, err := h.greet(raw, t, aware)
	if !stop() && err == nil {
		err = fmt.Errorf("waiting for the VNC server: %w", ctx.Err())
	}
	if err != nil {
		raw.Close()
		return nil, nil, nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	return conn, greeting, login, nil
}

// greet reads and checks the VNC server's greeting and, for an RFB-aware
// console, logs in; conn is what the session goes on with (TLS over raw
// after VeNCrypt X.509).
func (h *Handler) greet(raw net.Conn, t tokenresolver.Target, aware bool) (conn net.Conn, greeting []byte, login *rfbproxy.Result, err error) {
	greeting = make([]byte, rfb.VersionLen)
	if _, err := io.ReadFull(raw, greeting); err != nil {
		return nil, nil, nil, fmt.Errorf("reading RFB greeting: %w", err)
	}
	if _, _, err := rfb.ParseVersion(greeting); err != nil {
		return nil, nil, nil, fmt.Errorf("target does not speak RFB: %w", err)
	}
	if !aware {
		return raw, greeting, nil, nil
	}
	conn, res, err := rfbproxy.Login(raw, greeting, h.credentialsFor(t))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("logging in to the VNC server: %w", err)
	}
	return conn, nil, &res, nil
}

// clientIP is Caddy's client IP of the request (which honours trusted
// proxies), or the connection's.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// clientAddress is the browser's address: Caddy's client IP (which honours
// trusted proxies) with the connection's port.
func clientAddress(r *http.Request) string {
	ip := clientIP(r)
	if _, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return net.JoinHostPort(ip, port)
	}
	return ip
}

// tokenHash is what logs carry instead of the token: the first 12 hex digits
// of its SHA-256, enough to correlate log lines with a control plane that
// hashes its tokens the same way.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:6])
}

func tokenHashField(token string) zap.Field {
	return zap.String("token_hash", tokenHash(token))
}

// hijackWriter exposes Hijack to gorilla/websocket, which asserts
// http.Hijacker directly, while Caddy's response writer wrappers offer it
// only through Unwrap.
//
// It hijacks the innermost writer, past Caddy's access-log recorder: that
// recorder wraps a hijacked connection to count its bytes and reads the
// counts when the handler returns, but a session outlives the handler (so
// that an idle console holds no request goroutine and no request state). The
// session logs its own bytes and duration when it ends.
//
// gorilla gets the connection as a browserConn.
type hijackWriter struct {
	http.ResponseWriter
}

func (w hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(innermostWriter(w.ResponseWriter)).Hijack()
	if err != nil {
		return c, brw, err
	}
	return console.NewBrowserConn(c), brw, nil
}

// innermostWriter is the server's own response writer, under Caddy's
// wrappers.
func innermostWriter(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ http.Hijacker               = hijackWriter{}
)
