// Package admission decides whether a console opens: the one pipeline that
// every door (the WebSocket handler over HTTP/1.1, HTTP/2 and HTTP/3, the
// native VNC listener) runs a console request through before any byte is
// relayed.
//
// A door extracts what it knows (the token, the client's address, the
// request's Origin) and calls Admit, which checks, in this order: the
// Origin, the token's presence, the client's failed-token rate, the
// console limits, the token lookup, the target's place in allow_targets,
// for a serial console that no other console has its target, the dial,
// and the VNC server's greeting or the proxy's login to it (for protocol
// vnc only). It returns either a Console, the target's connection ready
// for the relay, or a Refusal with the status and short reason a browser
// gets.
//
// It knows nothing of Caddy or WebSockets: caddymodule builds a Pipeline
// from a handler's config, and internal/console relays an admitted
// console.
package admission

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbproxy"
	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

// DefaultDialTimeout bounds the dial, the greeting and the login when
// Config.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// limitRetryAfter is the Retry-After of a refusal for max_sessions:
// consoles are long-lived, and a browser should not retry at once.
const limitRetryAfter = 10 * time.Second

// Why a console ends by itself, as logged and as the close frame's text.
const (
	ReasonTokenExpired = "token expired"
	ReasonTimeLimit    = "session time limit"
)

// Config is what a pipeline checks; caddymodule fills it from a handler's
// options, which it documents.
type Config struct {
	// Resolver maps tokens to VNC servers. Required.
	Resolver tokenresolver.Resolver
	// AllowedOrigins are the origins (scheme://host[:port]) whose pages
	// may open consoles; "*" allows any; none: the endpoint's own origin.
	AllowedOrigins []string
	// AllowTargets are the allow_targets rules; none: any target.
	AllowTargets []string
	// FailedTokenRate limits unknown or expired tokens per client; the
	// zero Rate: no limit.
	FailedTokenRate Rate
	// DialTimeout bounds the dial, the greeting and the login together.
	DialTimeout time.Duration
	// Protocol is what the targets speak: vnc (the default, for "")
	// reads and checks the RFB greeting; the others read nothing before
	// the upgrade; serial also allows one console per target.
	Protocol Protocol
	// VNCAuth: the proxy logs in to every VNC server itself, with
	// Credentials (a token's own password and username take their place).
	VNCAuth     bool
	Credentials rfb.Credentials
	// ViewOnly makes every console view-only (RFB-aware).
	ViewOnly bool
	// Clipboard is every console's clipboard policy; one other than the
	// default makes consoles RFB-aware, as a token's narrower grant does.
	Clipboard rfbproxy.Clipboard
	// AlwaysLogin makes every console RFB-aware: the proxy logs in to
	// the VNC server itself, security None included. It is for doors
	// whose clients authenticated to the proxy and never see the VNC
	// server's security (native viewers): there a transparent relay
	// would hand the viewer a second, unexpected handshake.
	AlwaysLogin bool
	// Record: consoles are recorded, which makes them RFB-aware; with
	// RecordOptIn, only those whose token's record says "record": true.
	Record      bool
	RecordOptIn bool
	// Console limits and ends.
	MaxSessions         int
	MaxSessionsPerToken int
	EndAtExpiry         bool
	MaxSessionDuration  time.Duration
	// Logger gets the "request refused" lines.
	Logger *zap.Logger
	// Metrics count results and lookups; nil functions are skipped.
	Metrics Metrics
}

// Metrics are the pipeline's hooks into a door's metrics, by the name of
// the server the request came to.
type Metrics struct {
	// Result counts a request by its result: "started" (counted by the
	// door, once the session runs) or a Refusal's Result.
	Result func(server, result string)
	// Resolved observes how long the resolver took.
	Resolved func(server string, d time.Duration)
}

// Pipeline admits consoles by one handler's (or listener's) config. It is
// safe for concurrent use.
type Pipeline struct {
	cfg            Config
	state          *State
	logger         *zap.Logger
	allowedOrigins map[string]bool
	anyOrigin      bool
	targets        targetPolicy
	dialer         net.Dialer
}

// New makes the pipeline of cfg. state holds the console counts and the
// failed-token table, which outlive a config: give the pipeline that
// takes over a handler's place across a reload the same state. A
// FailedTokenRate applies to the state's table, as the new rate.
func New(cfg Config, state *State) (*Pipeline, error) {
	if cfg.Resolver == nil {
		return nil, errors.New("a resolver is required")
	}
	if cfg.DialTimeout < 0 || cfg.MaxSessionDuration < 0 {
		return nil, errors.New("durations must not be negative")
	}
	if cfg.MaxSessions < 0 || cfg.MaxSessionsPerToken < 0 {
		return nil, errors.New("max_sessions and max_sessions_per_token must not be negative")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	proto, err := ParseProtocol(string(cfg.Protocol))
	if err != nil {
		return nil, err
	}
	cfg.Protocol = proto
	if cfg.ViewOnly && !proto.speaksRFB() {
		return nil, fmt.Errorf("view_only needs protocol vnc, not %s: the proxy speaks RFB with both sides", proto)
	}
	if cfg.Clipboard.Filtered() && !proto.speaksRFB() {
		return nil, fmt.Errorf("clipboard needs protocol vnc, not %s: the proxy frames RFB both ways", proto)
	}
	if cfg.VNCAuth && !proto.speaksRFB() {
		return nil, fmt.Errorf("vnc_auth needs protocol vnc, not %s: the proxy speaks RFB with the VNC server", proto)
	}
	if cfg.Record && !proto.speaksRFB() {
		return nil, fmt.Errorf("record needs protocol vnc, not %s: a recording is the RFB stream the proxy serves", proto)
	}
	if cfg.AlwaysLogin && !proto.speaksRFB() {
		return nil, fmt.Errorf("a door whose clients log in to the proxy needs protocol vnc, not %s: the proxy speaks RFB with the VNC server", proto)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	p := &Pipeline{
		cfg:            cfg,
		state:          state,
		logger:         cfg.Logger,
		allowedOrigins: make(map[string]bool, len(cfg.AllowedOrigins)),
		dialer:         net.Dialer{Timeout: cfg.DialTimeout},
	}
	for _, o := range cfg.AllowedOrigins {
		if o == "*" {
			p.anyOrigin = true
			continue
		}
		norm, err := NormalizeOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("allowed_origins: %w", err)
		}
		p.allowedOrigins[norm] = true
	}
	for _, a := range cfg.AllowTargets {
		rule, err := parseTargetRule(a)
		if err != nil {
			return nil, err
		}
		p.targets = append(p.targets, rule)
	}
	if p.targets != nil {
		p.dialer.ControlContext = p.targets.control
	}
	if err := state.setFailedTokenRate(cfg.FailedTokenRate); err != nil {
		return nil, err
	}
	return p, nil
}

// DialTimeout is how long the dial, the greeting and the login may take;
// doors bound the client's own handshake with it too.
func (p *Pipeline) DialTimeout() time.Duration { return p.cfg.DialTimeout }

// Request is what a door knows of a console request.
type Request struct {
	// Token is the console token; never logged.
	Token string
	// ClientIP is the client's IP address (after trusted proxies), the
	// failed-token rate's key; Client is its address with the port, for
	// logs and the admin list.
	ClientIP string
	Client   string
	// Origin is the request's Origin header: "" when not from a browser
	// (a native client), which any Origin policy allows. SelfOrigin is the
	// origin the endpoint itself was reached at (scheme://host[:port]),
	// the only one allowed when no AllowedOrigins are configured.
	Origin     string
	SelfOrigin string
	// Server names the door (the Caddy server's name, or the listener's
	// address), for metrics.
	Server string
}

// Refusal is a console request the pipeline turned away. It is an error.
type Refusal struct {
	// Status is the HTTP status a browser gets; 0 when the client left
	// and nobody is there to answer.
	Status int
	// Reason is the short text a client is shown; it never holds the
	// token, the target or an internal error.
	Reason string
	// Result is the metrics label ("rate_limited", "token_refused", ...).
	Result string
	// RetryAfter, when set, is sent as Retry-After.
	RetryAfter time.Duration
	// Err is what went wrong, and Target the VNC server it was about,
	// for the log only.
	Err    error
	Target string
}

func (r *Refusal) Error() string {
	if r.Err != nil {
		return r.Reason + ": " + r.Err.Error()
	}
	return r.Reason
}

func (r *Refusal) Unwrap() error { return r.Err }

// Refusals a door makes itself, before the pipeline runs.
var (
	// RefuseNotUpgrade: an HTTP request that is not a WebSocket upgrade.
	RefuseNotUpgrade = func(err error) *Refusal {
		return &Refusal{Status: http.StatusBadRequest, Reason: "not a WebSocket upgrade request", Result: "bad_request", Err: err}
	}
)

// Admit runs req through the pipeline. On success the Console holds a
// count of its own, released by Console.Release (the session does it when
// it ends) or Console.Abandon (when the door cannot start the session).
// ctx bounds the lookup and the dial; when it ends (the client left), the
// request is refused with Status 0.
func (p *Pipeline) Admit(ctx context.Context, req Request) (*Console, *Refusal) {
	c, ref := p.admit(ctx, req)
	if ref != nil {
		p.Refused(req, ref, tokenFields(req.Token)...)
		return nil, ref
	}
	return c, nil
}

// check is the pipeline's first steps, which need no lookup: the Origin,
// the token's presence and the client's failed-token rate.
func (p *Pipeline) check(req Request) *Refusal {
	if !p.originAllowed(req.Origin, req.SelfOrigin) {
		return &Refusal{Status: http.StatusForbidden, Reason: "origin not allowed", Result: "origin_refused"}
	}
	if req.Token == "" {
		return &Refusal{Status: http.StatusUnauthorized, Reason: "missing token", Result: "no_token"}
	}
	if wait := p.state.failedTokens.retryAfter(req.ClientIP); wait > 0 {
		return &Refusal{Status: http.StatusTooManyRequests, Reason: "too many failed tokens", Result: "rate_limited", RetryAfter: wait}
	}
	return nil
}

func (p *Pipeline) admit(ctx context.Context, req Request) (*Console, *Refusal) {
	if ref := p.check(req); ref != nil {
		return nil, ref
	}
	hash := TokenHash(req.Token)
	release, err := p.state.counts.reserve(hash, p.cfg.MaxSessions, p.cfg.MaxSessionsPerToken)
	switch {
	case errors.Is(err, errTooManyConsolesForToken):
		return nil, &Refusal{Status: http.StatusTooManyRequests, Reason: "too many consoles for this token", Result: "too_many_for_token", Err: err}
	case err != nil:
		return nil, &Refusal{Status: http.StatusServiceUnavailable, Reason: "too many consoles", Result: "too_many_consoles", RetryAfter: limitRetryAfter, Err: err}
	}
	admitted := false
	defer func() {
		if !admitted {
			release()
		}
	}()

	start := time.Now()
	target, err := p.cfg.Resolver.Resolve(ctx, tokenresolver.Query{
		Token:      req.Token,
		ClientAddr: req.Client,
		Origin:     req.Origin,
	})
	if p.cfg.Metrics.Resolved != nil {
		p.cfg.Metrics.Resolved(req.Server, time.Since(start))
	}
	if err == nil && target.Expired(time.Now()) {
		err = tokenresolver.ErrExpired
	}
	switch {
	case err == nil:
	case errors.Is(err, tokenresolver.ErrNotFound), errors.Is(err, tokenresolver.ErrExpired):
		p.state.failedTokens.failed(req.ClientIP)
		return nil, &Refusal{Status: http.StatusForbidden, Reason: "invalid or expired token", Result: "token_refused", Err: err}
	case ctx.Err() != nil:
		return nil, clientGone(err)
	default:
		return nil, &Refusal{Status: http.StatusServiceUnavailable, Reason: "token service unavailable", Result: "resolver_unavailable", Err: err}
	}
	if target.ViewOnly && !p.cfg.Protocol.speaksRFB() {
		// Only an RFB console can be made view-only; relaying this one
		// would give the token more than its record grants.
		return nil, &Refusal{Status: http.StatusForbidden, Reason: "view-only console not supported", Result: "view_only_unsupported",
			Err: fmt.Errorf("the token's record is view_only, which protocol %s cannot enforce", p.cfg.Protocol), Target: target.String()}
	}
	if p.clipboardFor(target).Filtered() && !p.cfg.Protocol.speaksRFB() {
		return nil, &Refusal{Status: http.StatusForbidden, Reason: "clipboard policy not supported", Result: "clipboard_unsupported",
			Err: fmt.Errorf("the token's record narrows the clipboard, which protocol %s cannot enforce", p.cfg.Protocol), Target: target.String()}
	}
	if p.cfg.Protocol == ProtocolSerial {
		inUse, err := serialConsoles.reserve(target)
		if err != nil {
			return nil, &Refusal{Status: http.StatusConflict, Reason: "console in use", Result: "console_in_use", Err: err, Target: target.String()}
		}
		counted := release
		release = func() { counted(); inUse() }
	}
	aware := p.rfbAware(target)
	conn, greeting, login, err := p.dial(ctx, target, aware)
	if err != nil {
		ref := &Refusal{Status: http.StatusBadGateway, Reason: "VNC server unavailable", Result: "target_unavailable", Err: err, Target: target.String()}
		switch {
		case errors.Is(err, errTargetNotAllowed):
			ref.Status, ref.Reason, ref.Result = http.StatusForbidden, "target not allowed", "target_refused"
		case ctx.Err() != nil:
			return nil, clientGone(err)
		}
		return nil, ref
	}

	admitted = true
	c := &Console{
		Conn:      conn,
		Greeting:  greeting,
		Login:     login,
		ViewOnly:  aware && (p.cfg.ViewOnly || target.ViewOnly),
		Clipboard: p.clipboardFor(target),
		Record:    p.recorded(target),
		Target:    target.String(),
		TokenHash: hash,
		ExpiresAt: target.ExpiresAt,
		release:   release,
	}
	if p.cfg.Protocol == ProtocolSPICE {
		c.redial = func(ctx context.Context) (net.Conn, error) {
			conn, _, _, err := p.dial(ctx, target, false)
			return conn, err
		}
	}
	c.EndAt, c.EndReason = p.sessionEnd(time.Now(), target.ExpiresAt)
	return c, nil
}

// clientGone is the refusal of a request whose client left while the
// resolver or the VNC server was slow: nobody is there to answer.
func clientGone(err error) *Refusal {
	return &Refusal{Result: "client_gone", Reason: "client left", Err: err}
}

// Refused logs a refusal and counts it; Admit does it for its own, doors
// for theirs (RefuseNotUpgrade). The log line never holds the token.
func (p *Pipeline) Refused(req Request, ref *Refusal, fields ...zap.Field) {
	if p.cfg.Metrics.Result != nil {
		p.cfg.Metrics.Result(req.Server, ref.Result)
	}
	level := zap.InfoLevel
	switch {
	case ref.Status == 0:
		level = zap.DebugLevel
	case ref.Status >= 500:
		level = zap.WarnLevel
	}
	if ce := p.logger.Check(level, "request refused"); ce != nil {
		fields = append(fields,
			zap.Int("status", ref.Status),
			zap.String("reason", ref.Reason),
			zap.String("client", req.Client))
		if ref.Target != "" {
			fields = append(fields, zap.String("target", ref.Target))
		}
		if ref.Err != nil {
			fields = append(fields, zap.Error(ref.Err))
		}
		ce.Write(fields...)
	}
}

func tokenFields(token string) []zap.Field {
	if token == "" {
		return nil
	}
	return []zap.Field{zap.String("token_hash", TokenHash(token))}
}

// rfbAware reports whether the proxy terminates the RFB handshake for a
// console to t: when the door always logs in, vnc_auth is configured, the
// token's record carries a password, the console is view-only, has a
// clipboard policy other than the default, or is recorded.
func (p *Pipeline) rfbAware(t tokenresolver.Target) bool {
	return p.cfg.Protocol.speaksRFB() && (p.cfg.AlwaysLogin || p.cfg.VNCAuth || t.Password != "" || p.cfg.ViewOnly || t.ViewOnly ||
		p.clipboardFor(t).Filtered() || p.recorded(t))
}

// clipboardFor is the clipboard policy of a console to t: the door's,
// narrowed by the token's record.
func (p *Pipeline) clipboardFor(t tokenresolver.Target) rfbproxy.Clipboard {
	return p.cfg.Clipboard.Narrow(t.Clipboard)
}

// recorded reports whether a console to t is recorded.
func (p *Pipeline) recorded(t tokenresolver.Target) bool {
	return p.cfg.Protocol.speaksRFB() && p.cfg.Record && (!p.cfg.RecordOptIn || t.Record)
}

// credentialsFor are the configured credentials with the token's own in
// their place where its record has them.
func (p *Pipeline) credentialsFor(t tokenresolver.Target) rfb.Credentials {
	c := p.cfg.Credentials
	if t.Password != "" {
		c.Password = t.Password
	}
	if t.Username != "" {
		c.Username = t.Username
	}
	return c
}

// sessionEnd is when a console's token expires or its time is up, and
// which of the two comes first; zero when neither applies.
func (p *Pipeline) sessionEnd(started, expiresAt time.Time) (time.Time, string) {
	var at time.Time
	var reason string
	if p.cfg.EndAtExpiry && !expiresAt.IsZero() {
		at, reason = expiresAt, ReasonTokenExpired
	}
	if p.cfg.MaxSessionDuration > 0 {
		limit := started.Add(p.cfg.MaxSessionDuration)
		if at.IsZero() || limit.Before(at) {
			at, reason = limit, ReasonTimeLimit
		}
	}
	return at, reason
}

// Console is an admitted console: the VNC server's connection, ready for
// the relay, and what the session needs to know of it. It holds no VNC
// credential: the login, if any, is done.
type Console struct {
	// Conn is the VNC server's connection: past its greeting (in
	// Greeting) for a transparent console, past the login (a TLS
	// connection after VeNCrypt X.509) for an RFB-aware one.
	Conn net.Conn
	// Greeting is the VNC server's greeting read while checking it, for
	// the client to get first; nil for RFB-aware consoles and without
	// check_rfb.
	Greeting []byte
	// Login is how the proxy logged in to the VNC server, for an
	// RFB-aware console; nil: the client speaks RFB with the server.
	Login *rfb.Result
	// ViewOnly drops the client's input (RFB-aware consoles only).
	ViewOnly bool
	// Clipboard is the console's clipboard policy (RFB-aware consoles
	// only, which every console with a policy other than the default is).
	Clipboard rfbproxy.Clipboard
	// Record: the console is to be recorded (it is RFB-aware).
	Record bool
	// Target is the VNC server, network:address, for logs and the admin
	// list.
	Target string
	// TokenHash is what logs carry instead of the token.
	TokenHash string
	// ExpiresAt is when the token expires; zero when not known.
	ExpiresAt time.Time
	// EndAt is when the console ends by itself, with EndReason; zero:
	// never.
	EndAt     time.Time
	EndReason string

	release func()
	// redial connects to the same target again, through the same
	// allow_targets and dial bound: for the later channels of a SPICE
	// console (nil for other protocols).
	redial func(ctx context.Context) (net.Conn, error)
}

// Release gives back the console's place in the limits; the session calls
// it when it ends. It may be called more than once.
func (c *Console) Release() { c.release() }

// Abandon closes the VNC server's connection and releases the console,
// for a door that could not start its session.
func (c *Console) Abandon() {
	c.Conn.Close()
	c.release()
}

// TokenHash is what logs carry instead of a token: the first 12 hex digits
// of its SHA-256, enough to correlate log lines with a control plane that
// hashes its tokens the same way.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:6])
}
