package caddymodule

import (
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("vnc_proxy", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("vnc_proxy", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var handler Handler
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return &handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	vnc_proxy [<matcher>] {
//		resolver <source> [<args...>] {
//			<source-specific options>
//		}
//		token            <placeholder>
//		allowed_origins  <origin...>
//		allow_targets    <cidr|host[:port[-port]]|unix:/dir/>...
//		failed_token_rate <n>/<duration>
//		dial_timeout     <duration>
//		ping_interval    <duration>
//		idle_timeout     <duration>
//		max_message_size <size>
//		protocol         vnc|spice|serial|raw
//		check_rfb        on|off
//		vnc_auth {
//			password <secret>
//			username <user>
//			tls {
//				ca          <pem-file>
//				cert        <pem-file>
//				key         <pem-file>
//				server_name <name>
//			}
//			require_tls
//		}
//		view_only        on|off
//		clipboard {
//			copy     on|off
//			paste    on|off
//			max_size <size>
//		}
//		max_sessions           <n>
//		max_sessions_per_token <n>
//		end_at_expiry          on|off
//		max_session_duration   <duration>
//		record [<dir>] {
//			dir           <path>
//			opt_in        on|off
//			max_age       <duration>
//			max_total     <size>
//			include_input on|off
//			on_error      end|continue
//		}
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	err := h.unmarshalBlock(d, "vnc_proxy", func(opt string) (bool, error) {
		switch opt {
		case "token":
			if !d.AllArgs(&h.Token) {
				return true, d.ArgErr()
			}

		case "allowed_origins":
			h.AllowedOrigins = d.RemainingArgs()
			if len(h.AllowedOrigins) == 0 {
				return true, d.ArgErr()
			}
			for _, o := range h.AllowedOrigins {
				if o == "*" {
					continue
				}
				if _, err := admission.NormalizeOrigin(o); err != nil {
					return true, d.Err(err.Error())
				}
			}

		case "ping_interval":
			dur, err := parseDuration(d)
			if err != nil {
				return true, err
			}
			h.PingInterval = &dur

		case "max_message_size":
			var s string
			if !d.AllArgs(&s) {
				return true, d.ArgErr()
			}
			size, err := humanize.ParseBytes(s)
			if err != nil || size == 0 || size > 1<<40 {
				return true, d.Errf("max_message_size: invalid size %q", s)
			}
			h.MaxMessageSize = int64(size)

		case "protocol":
			if !d.AllArgs(&h.Protocol) {
				return true, d.ArgErr()
			}
			if _, err := admission.ParseProtocol(h.Protocol); err != nil || h.Protocol == "" {
				return true, d.Errf("protocol %q: want vnc, spice, serial or raw", h.Protocol)
			}

		case "check_rfb":
			on, err := parseOnOff(d)
			if err != nil {
				return true, err
			}
			h.CheckRFB = &on

		default:
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	if h.ResolverRaw == nil {
		return d.Err("vnc_proxy needs a resolver (resolver file|http|redis|jwt|nova ...)")
	}
	if _, err := h.targetProtocol(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// unmarshalBlock reads the block of a door's Caddyfile directive or
// option (what it is called, for errors), which takes no arguments: each
// option at most once, first the door's own (own reports whether opt is
// one of them), then the console options every door shares.
func (o *ConsoleOptions) unmarshalBlock(d *caddyfile.Dispenser, what string, own func(opt string) (bool, error)) error {
	d.Next() // the directive's or option's name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("%s already specified", opt)
		}
		seen[opt] = true
		ok, err := own(opt)
		if !ok && err == nil {
			ok, err = o.unmarshalOption(d)
		}
		if err != nil {
			return err
		}
		if !ok {
			return d.Errf("unrecognized %s option %q", what, opt)
		}
	}
	return nil
}

// unmarshalCaddyfile reads the block of vnc_auth.
func (a *VNCAuth) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("vnc_auth: %s already specified", opt)
		}
		seen[opt] = true
		switch opt {
		case "password":
			if !d.AllArgs(&a.Password) {
				return d.ArgErr()
			}
		case "username":
			if !d.AllArgs(&a.Username) {
				return d.ArgErr()
			}
		case "require_tls":
			if d.NextArg() {
				return d.ArgErr()
			}
			a.RequireTLS = true
		case "tls":
			if d.NextArg() {
				return d.ArgErr()
			}
			a.TLS = new(VNCTLS)
			tlsSeen := make(map[string]bool)
			for tlsNesting := d.Nesting(); d.NextBlock(tlsNesting); {
				sub := d.Val()
				if tlsSeen[sub] {
					return d.Errf("vnc_auth tls: %s already specified", sub)
				}
				tlsSeen[sub] = true
				var field *string
				switch sub {
				case "ca":
					field = &a.TLS.CA
				case "cert":
					field = &a.TLS.Cert
				case "key":
					field = &a.TLS.Key
				case "server_name":
					field = &a.TLS.ServerName
				default:
					return d.Errf("unrecognized vnc_auth tls option %q", sub)
				}
				if !d.AllArgs(field) {
					return d.ArgErr()
				}
			}
			if a.TLS.CA == "" {
				return d.Err("vnc_auth tls: ca is required")
			}
			if (a.TLS.Cert == "") != (a.TLS.Key == "") {
				return d.Err("vnc_auth tls: cert and key go together")
			}
		default:
			return d.Errf("unrecognized vnc_auth option %q", opt)
		}
	}
	if a.RequireTLS && a.TLS == nil {
		return d.Err("vnc_auth: require_tls needs a tls block")
	}
	return nil
}

// eachBlockOption calls each with the name of every option in the block
// the dispenser is at (the block of what, for errors); an option given
// twice is an error.
func eachBlockOption(d *caddyfile.Dispenser, what string, each func(opt string) error) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("%s: %s already specified", what, opt)
		}
		seen[opt] = true
		if err := each(opt); err != nil {
			return err
		}
	}
	return nil
}

// parseDuration reads the one duration argument of the current option.
func parseDuration(d *caddyfile.Dispenser) (caddy.Duration, error) {
	opt := d.Val()
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return 0, d.Errf("%s: invalid duration %q: %v", opt, s, err)
	}
	if dur < 0 {
		return 0, d.Errf("%s: duration %q is negative", opt, s)
	}
	return caddy.Duration(time.Duration(dur)), nil
}

// parseOnOff reads the option's argument, on or off.
func parseOnOff(d *caddyfile.Dispenser) (bool, error) {
	opt := d.Val()
	var s string
	if !d.AllArgs(&s) {
		return false, d.ArgErr()
	}
	switch s {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, d.Errf("%s: %q is neither on nor off", opt, s)
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
