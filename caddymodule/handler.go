// Package caddymodule is the Caddy side of caddy-vnc-proxy: the vnc_proxy
// HTTP handler, its Caddyfile syntax, the Caddy modules that wrap the token
// resolvers of package tokenresolver, and the handler's metrics.
package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
	"github.com/vncgate/caddy-vnc-proxy/internal/console"
)

func init() {
	caddy.RegisterModule(Handler{})
	// Consoles outlive the config that started them; one that survived a
	// reload to a config without vnc_proxy still gets its 1001 on exit.
	caddy.OnExit(func(context.Context) { endAllConsoles() })
}

// defaultMaxMessageSize is max_message_size's default.
const defaultMaxMessageSize = 1 << 20

// endAllConsoles ends every console of the process with 1001.
func endAllConsoles() {
	console.Sessions.CloseAll(websocket.CloseGoingAway, "server shutting down")
}

// Handler is the vnc_proxy HTTP handler. It takes a token from a WebSocket
// upgrade request, asks a resolver which VNC server the token stands for,
// dials that server and, for VNC, checks that it speaks RFB, and only then
// upgrades the request and relays the byte stream both ways.
//
// Before the upgrade every failure is a plain HTTP response: 400 for a request
// that is not a WebSocket upgrade (HTTP/1.1) or extended CONNECT (HTTP/2,
// HTTP/3), 401 without a token, 403 for an unknown, expired or used token,
// a refused Origin or target, 429 and 503 beyond the rate and console
// limits, 503 when the resolver cannot answer, 409 when a serial
// console's target already has a console, 502 when the target cannot be
// reached or a VNC server does not speak RFB.
type Handler struct {
	// The console options, the same as the native listener's.
	ConsoleOptions

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

	// How often the proxy pings the browser; a browser that answers neither
	// ping nor data within two intervals is gone and its session ends. Zero
	// disables pings. Default: 30s.
	PingInterval *caddy.Duration `json:"ping_interval,omitempty"`

	// The largest WebSocket message accepted from the browser, in bytes; a
	// larger one ends the session with close code 1009. Default: 1048576 (1 MiB).
	MaxMessageSize int64 `json:"max_message_size,omitempty"`

	// What the targets speak: "vnc" (the VNC server must greet with "RFB
	// xxx.yyy\n" before the browser's request is upgraded; RFB-aware mode
	// and view-only work), "serial" (a serial console's TCP port: raw
	// bytes both ways, text messages from the browser relayed as their
	// UTF-8 bytes, and one console per target in the whole process: a
	// second is refused 409 "console in use"), "spice" (spice-html5's
	// channels, one WebSocket each: nothing is read from the target before
	// the upgrade; the browser's link message and the server's answer are
	// checked, and a session's channels are one console) or "raw" (any
	// byte stream, nothing checked). Default: "vnc".
	Protocol string `json:"protocol,omitempty"`

	// The old spelling of protocol: false is protocol "raw", true is
	// protocol "vnc"; it must agree with protocol when both are given.
	// Default: true.
	CheckRFB *bool `json:"check_rfb,omitempty"`

	pipeline     *admission.Pipeline
	stateKey     string
	logger       *zap.Logger
	upgrader     websocket.Upgrader
	pingInterval time.Duration
	protocol     admission.Protocol
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.vnc_proxy",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up the handler: its resolver, and the admission pipeline
// every console request goes through.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	cfg, err := h.admissionConfig(ctx)
	if err != nil {
		return err
	}
	if h.PingInterval != nil && *h.PingInterval < 0 {
		return errors.New("durations must not be negative")
	}
	if h.MaxMessageSize < 0 {
		return errors.New("max_message_size must not be negative")
	}
	h.pingInterval = console.DefaultPingInterval
	if h.PingInterval != nil {
		h.pingInterval = time.Duration(*h.PingInterval)
	}
	if h.MaxMessageSize == 0 {
		h.MaxMessageSize = defaultMaxMessageSize
	}
	h.protocol, err = h.targetProtocol()
	if err != nil {
		return err
	}
	cfg.Protocol = h.protocol
	cfg.AllowedOrigins = h.AllowedOrigins

	h.stateKey = stateKey(ctx)
	h.pipeline, err = admission.New(cfg, loadState(h.stateKey))
	if err != nil {
		return err
	}
	if err := endConsolesAtExit(ctx); err != nil {
		return err
	}

	h.upgrader = websocket.Upgrader{
		// The pipeline checked the Origin before the target was dialed.
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

// targetProtocol is the protocol of the handler's targets, from protocol
// and its old spelling check_rfb, and checks that the options that need
// RFB have it.
func (h *Handler) targetProtocol() (admission.Protocol, error) {
	p, err := admission.ParseProtocol(h.Protocol)
	if err != nil {
		return "", err
	}
	if h.CheckRFB != nil {
		switch {
		case h.Protocol == "" && !*h.CheckRFB:
			p = admission.ProtocolRaw
		case *h.CheckRFB && p != admission.ProtocolVNC:
			return "", fmt.Errorf("check_rfb on contradicts protocol %s: check_rfb on means protocol vnc", p)
		case !*h.CheckRFB && p == admission.ProtocolVNC:
			return "", errors.New("check_rfb off contradicts protocol vnc: check_rfb off is the old spelling of protocol raw")
		}
	}
	if p != admission.ProtocolVNC {
		if h.VNCAuth != nil {
			return "", fmt.Errorf("vnc_auth needs protocol vnc, not %s", p)
		}
		if h.ViewOnly {
			return "", fmt.Errorf("view_only needs protocol vnc, not %s", p)
		}
		if h.Record != nil {
			return "", fmt.Errorf("record needs protocol vnc, not %s", p)
		}
	}
	return p, nil
}

// Cleanup lets go of the handler's place in the config; live consoles run
// on across a config reload (they get their 1001 when the process exits).
func (h *Handler) Cleanup() error {
	releaseState(h.stateKey)
	h.releaseRecording()
	return nil
}

// ServeHTTP runs the request through the admission pipeline (Origin,
// token, rate, limits, lookup, allow_targets, dial, greeting or login),
// then upgrades it and hands both connections to a console session. Over
// HTTP/1.1 the session runs on after ServeHTTP returns; over HTTP/2 and
// HTTP/3 (extended CONNECT) its stream is the request's, and ServeHTTP
// returns when the session ends.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	req := admission.Request{
		Token:      h.token(r),
		ClientIP:   clientIP(r),
		Client:     clientAddress(r),
		Origin:     r.Header.Get("Origin"),
		SelfOrigin: requestScheme(r) + "://" + r.Host,
		Server:     serverName(r),
	}
	if err := checkUpgradeRequest(r); err != nil {
		ref := admission.RefuseNotUpgrade(err)
		h.pipeline.Refused(req, ref)
		return h.refuse(w, r, ref)
	}
	if h.protocol == admission.ProtocolSPICE {
		return h.serveSPICE(w, r, req)
	}
	c, ref := h.pipeline.Admit(r.Context(), req)
	if ref != nil {
		return h.refuse(w, r, ref)
	}
	ws, stream, ok := h.upgradeEither(w, r, req, c.Conn)
	if !ok {
		c.Release()
		return nil
	}
	s := console.New(ws, c.Conn, h.sessionConfig(r, req, c))
	return h.run(s, req, stream, c.Greeting, c.Release)
}

// upgradeEither upgrades the request: an HTTP/1.1 upgrade, or an
// extended CONNECT over HTTP/2 or HTTP/3, whose stream lives as long as
// the request. When it fails, the browser has had its answer or left, and
// target is closed.
func (h *Handler) upgradeEither(w http.ResponseWriter, r *http.Request, req admission.Request, target net.Conn) (*websocket.Conn, *console.Stream, bool) {
	var (
		ws     *websocket.Conn
		stream *console.Stream
		err    error
	)
	if r.Method == http.MethodConnect {
		ws, stream, err = h.upgradeStream(w, r)
	} else {
		ws, err = h.upgrade(w, r)
	}
	if err != nil {
		target.Close()
		sessionsTotal.WithLabelValues(req.Server, "bad_request").Inc()
		h.logger.Debug("upgrade failed", zap.String("client", req.Client), zap.Error(err))
		return nil, nil, false
	}
	return ws, stream, true
}

// run starts an upgraded console's session and, for a stream, serves it
// until the session ends.
func (h *Handler) run(s *console.Session, req admission.Request, stream *console.Stream, greeting []byte, release func()) error {
	if err := s.Start(greeting); err != nil {
		if release != nil {
			release()
		}
		sessionsTotal.WithLabelValues(req.Server, "client_gone").Inc()
		h.logger.Debug("session did not start", zap.String("session", s.ID()), zap.Error(err))
		return nil
	}
	if s.Listed() {
		// A SPICE console's later channels are not consoles of their own.
		sessionsTotal.WithLabelValues(req.Server, "started").Inc()
	}
	if stream != nil {
		// The stream lives as long as this request.
		stream.Serve()
	}
	return nil
}

// sessionConfig is the console.Config of an admitted console.
func (h *Handler) sessionConfig(r *http.Request, req admission.Request, c *admission.Console) console.Config {
	return console.Config{
		Logger:           h.logger,
		PingInterval:     h.pingInterval,
		IdleTimeout:      time.Duration(h.IdleTimeout),
		MaxMessageSize:   h.MaxMessageSize,
		AcceptText:       h.protocol == admission.ProtocolSerial,
		HandshakeTimeout: time.Duration(h.DialTimeout),
		Metrics:          sessionMetrics(req.Server),
		Target:           c.Target,
		ExpiresAt:        c.ExpiresAt,
		Client:           req.Client,
		TokenHash:        c.TokenHash,
		Server:           req.Server,
		Transport:        transportName(r),
		Login:            c.Login,
		ViewOnly:         c.ViewOnly,
		Clipboard:        c.Clipboard,
		Record:           h.consoleRecord(c),
		EndAt:            c.EndAt,
		EndReason:        c.EndReason,
		Release:          c.Release,
	}
}

// transportName is how the browser opened the console, for the admin
// list: "ws" (HTTP/1.1 upgrade), "h2" or "h3" (extended CONNECT).
func transportName(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		return "h2"
	case 3:
		return "h3"
	}
	return "ws"
}

// refuse answers a console request the pipeline refused. The status is
// Caddy's: where the server has handle_errors routes, the refusal is a
// caddyhttp.Error for them to shape; without them the handler writes its
// short plain-text reason, which Caddy would leave empty. The reason never
// holds the token, the target or an internal error's text.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, ref *admission.Refusal) error {
	if ref.Status == 0 {
		// The client left; nobody is there to answer.
		return nil
	}
	if ref.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(ref.RetryAfter))
	}
	if hasErrorRoutes(r) {
		return caddyhttp.Error(ref.Status, errors.New(ref.Reason))
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(ref.Status)
	_, _ = io.WriteString(w, ref.Reason+"\n")
	return nil
}

// hasErrorRoutes reports whether the request's server has handle_errors
// routes.
func hasErrorRoutes(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return ok && srv.Errors != nil && len(srv.Errors.Routes) > 0
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
