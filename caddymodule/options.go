package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

// ConsoleOptions are the options that admit and end a console, the same,
// with the same syntax, defaults and meaning, on the vnc_proxy handler and
// on the native listener (the vnc_proxy app). The admission pipeline
// (internal/admission) applies them.
type ConsoleOptions struct {
	// The token resolver: which VNC server a token stands for. Required.
	// Modules in the namespace http.vnc_proxy.resolvers, chosen by "source":
	// file, http, redis, jwt or nova.
	ResolverRaw json.RawMessage `json:"resolver,omitempty" caddy:"namespace=http.vnc_proxy.resolvers inline_key=source"`

	// How long dialing the VNC server, receiving its RFB greeting and, in
	// the RFB-aware mode, logging in to it may take together; the same
	// bound applies to the browser's side of the RFB handshake in the
	// RFB-aware mode. Default: 5s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// A session in which no bytes move either way for this long ends.
	// Default: 0 (no idle timeout).
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

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

	// The clipboard policy of every console: which way clipboard text may
	// go, and how much of it. Default: both ways, as the VNC server allows.
	Clipboard *ClipboardPolicy `json:"clipboard,omitempty"`

	// How many consoles this handler relays at once; beyond it, a console
	// request gets 503 "too many consoles" with Retry-After, before its
	// token is looked up. Requests being opened count too, and so do the
	// live consoles of earlier configs: a handler is known by its server's
	// name and its place among that server's vnc_proxy handlers, and the
	// handler at the same place after a reload keeps its count. Default: 0
	// (no limit).
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

	// Consoles are recorded (see RecordOptions), which makes them
	// RFB-aware. Default: none.
	Record *RecordOptions `json:"record,omitempty"`
}

// admissionConfig loads the resolver and checks the options; the door
// adds what is its own (origins, the protocol, its logger).
func (o *ConsoleOptions) admissionConfig(ctx caddy.Context) (admission.Config, error) {
	if o.ResolverRaw == nil {
		return admission.Config{}, errors.New("a resolver is required (resolver file|http|redis|jwt|nova ...)")
	}
	mod, err := ctx.LoadModule(o, "ResolverRaw")
	if err != nil {
		return admission.Config{}, fmt.Errorf("loading resolver: %w", err)
	}
	resolver, ok := mod.(tokenresolver.Resolver)
	if !ok {
		return admission.Config{}, fmt.Errorf("module %T is not a token resolver", mod)
	}
	if o.DialTimeout < 0 || o.IdleTimeout < 0 {
		return admission.Config{}, errors.New("durations must not be negative")
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = caddy.Duration(admission.DefaultDialTimeout)
	}
	rate, err := parseRate(o.FailedTokenRate)
	if err != nil {
		return admission.Config{}, err
	}
	credentials, err := o.VNCAuth.credentials()
	if err != nil {
		return admission.Config{}, err
	}
	clipboard, err := o.Clipboard.policy()
	if err != nil {
		return admission.Config{}, err
	}
	if o.VNCAuth != nil {
		warnLiteralSecrets(ctx.Logger(), []secretOption{{"vnc_auth password", o.VNCAuth.Password, "VNC_PASSWORD"}})
	}
	cfg := admission.Config{
		Resolver:            resolver,
		AllowTargets:        o.AllowTargets,
		FailedTokenRate:     rate,
		DialTimeout:         time.Duration(o.DialTimeout),
		VNCAuth:             o.VNCAuth != nil,
		Credentials:         credentials,
		ViewOnly:            o.ViewOnly,
		Clipboard:           clipboard,
		MaxSessions:         o.MaxSessions,
		MaxSessionsPerToken: o.MaxSessionsPerToken,
		EndAtExpiry:         o.EndAtExpiry,
		MaxSessionDuration:  time.Duration(o.MaxSessionDuration),
		Logger:              ctx.Logger(),
		Metrics:             pipelineMetrics,
	}
	if err := o.provisionRecording(ctx, &cfg); err != nil {
		return admission.Config{}, err
	}
	return cfg, nil
}

// unmarshalOption reads one console option from a Caddyfile block: the
// option's name is d.Val(). It reports whether the option is one of
// these.
func (o *ConsoleOptions) unmarshalOption(d *caddyfile.Dispenser) (bool, error) {
	switch opt := d.Val(); opt {
	case "resolver":
		if !d.NextArg() {
			return true, d.Err("resolver needs a source: file, http, redis, jwt or nova")
		}
		source := d.Val()
		unm, err := caddyfile.UnmarshalModule(d, "http.vnc_proxy.resolvers."+source)
		if err != nil {
			return true, err
		}
		o.ResolverRaw = caddyconfig.JSONModuleObject(unm, "source", source, nil)

	case "allow_targets":
		o.AllowTargets = d.RemainingArgs()
		if len(o.AllowTargets) == 0 {
			return true, d.ArgErr()
		}
		for _, a := range o.AllowTargets {
			if err := admission.CheckTargetRule(a); err != nil {
				return true, d.Err(err.Error())
			}
		}

	case "failed_token_rate":
		if !d.AllArgs(&o.FailedTokenRate) {
			return true, d.ArgErr()
		}
		if _, err := parseRate(o.FailedTokenRate); err != nil {
			return true, d.Err(err.Error())
		}

	case "dial_timeout", "idle_timeout", "max_session_duration":
		dur, err := parseDuration(d)
		if err != nil {
			return true, err
		}
		switch opt {
		case "dial_timeout":
			o.DialTimeout = dur
		case "idle_timeout":
			o.IdleTimeout = dur
		default:
			o.MaxSessionDuration = dur
		}

	case "vnc_auth":
		if d.NextArg() {
			return true, d.ArgErr()
		}
		o.VNCAuth = new(VNCAuth)
		if err := o.VNCAuth.unmarshalCaddyfile(d); err != nil {
			return true, err
		}

	case "clipboard":
		o.Clipboard = new(ClipboardPolicy)
		return true, o.Clipboard.unmarshalCaddyfile(d)

	case "view_only", "end_at_expiry":
		on, err := parseOnOff(d)
		if err != nil {
			return true, err
		}
		if opt == "view_only" {
			o.ViewOnly = on
		} else {
			o.EndAtExpiry = on
		}

	case "record":
		o.Record = new(RecordOptions)
		if err := o.Record.unmarshalCaddyfile(d); err != nil {
			return true, err
		}

	case "max_sessions", "max_sessions_per_token":
		var s string
		if !d.AllArgs(&s) {
			return true, d.ArgErr()
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return true, d.Errf("%s: %q is not a non-negative number", opt, s)
		}
		if opt == "max_sessions" {
			o.MaxSessions = n
		} else {
			o.MaxSessionsPerToken = n
		}

	default:
		return false, nil
	}
	return true, nil
}
