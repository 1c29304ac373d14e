package caddymodule

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

func init() {
	caddy.RegisterModule(HTTPResolver{})
}

// HTTPResolver resolves tokens by asking an HTTP service (a callback).
//
// The service answers 200 with the target as plain text host:port or as JSON
// ({"host": "h:p"} or {"host": "h", "port": 5901}, optionally with
// "expires_at" and "password"); 401, 403, 404 or 410 for an unknown token.
// Any other answer, a timeout or a failed connection makes the client get 503.
// Every request carries the headers X-Vnc-Proxy-Client-Addr (the browser's
// address) and X-Vnc-Proxy-Origin (its Origin header, when it sent one).
// Browsers asking for the same token at once share one request, which carries
// the first browser's address and Origin.
type HTTPResolver struct {
	// The service's URL. "{token}" in it is replaced by the URL-escaped
	// token; other placeholders such as {env.*} are replaced once at load.
	// Required; with GET it must contain {token}.
	URL string `json:"url,omitempty"`

	// GET, or POST to send {"token": "..."} as a JSON body. Default: GET.
	Method string `json:"method,omitempty"`

	// Headers sent with every request; values may use placeholders such as
	// {env.API_KEY}. Default: none.
	Headers http.Header `json:"headers,omitempty"`

	// How long one request, body included, may take. Default: 2s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// How long a found token is remembered (never past its expiry), in a
	// cache of at most 10000 tokens. Unknown tokens are never cached.
	// Default: 0 (no cache).
	Cache caddy.Duration `json:"cache,omitempty"`

	// How many callback requests may be in flight at once (lookups of one
	// token share one); a lookup beyond it gets the browser 503 at once,
	// and a lookup whose browsers have all left is cancelled. Default: 256.
	MaxInFlight int `json:"max_in_flight,omitempty"`

	callback *tokenresolver.HTTPCallback
}

// CaddyModule returns the Caddy module information.
func (HTTPResolver) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.vnc_proxy.resolvers.http",
		New: func() caddy.Module { return new(HTTPResolver) },
	}
}

// Provision replaces placeholders and prepares the HTTP client.
func (r *HTTPResolver) Provision(ctx caddy.Context) error {
	var secrets []secretOption
	for name, values := range r.Headers {
		if credentialHeader(name) {
			for _, v := range values {
				secrets = append(secrets, secretOption{"resolver http header " + name, v, "CONSOLE_API_KEY"})
			}
		}
	}
	warnLiteralSecrets(ctx.Logger(), secrets)
	repl := caddy.NewReplacer()
	// ReplaceKnown keeps {token}, which no replacer knows.
	h := make(http.Header, len(r.Headers))
	for name, values := range r.Headers {
		for _, v := range values {
			h.Add(name, repl.ReplaceKnown(v, ""))
		}
	}
	r.callback = &tokenresolver.HTTPCallback{
		URL:         repl.ReplaceKnown(r.URL, ""),
		Method:      strings.ToUpper(r.Method),
		Header:      h,
		Timeout:     time.Duration(r.Timeout),
		CacheTTL:    time.Duration(r.Cache),
		MaxInFlight: r.MaxInFlight,
	}
	return r.callback.Init()
}

// Cleanup ends requests in flight and closes idle connections.
func (r *HTTPResolver) Cleanup() error {
	if r.callback == nil {
		return nil
	}
	return r.callback.Close()
}

// Resolve asks the service which VNC server the token stands for.
func (r *HTTPResolver) Resolve(ctx context.Context, q tokenresolver.Query) (tokenresolver.Target, error) {
	return r.callback.Resolve(ctx, q)
}

// UnmarshalCaddyfile sets up the resolver from Caddyfile tokens:
//
//	resolver http <url> {
//		method  GET|POST
//		header  <name> <value>
//		timeout <duration>
//		cache   <duration>
//		max_in_flight <n>
//	}
func (r *HTTPResolver) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the resolver's name
	args := d.RemainingArgs()
	if len(args) != 1 {
		return d.Errf("expected exactly one URL, got %d arguments", len(args))
	}
	r.URL = args[0]
	seen := make(map[string]bool)
	for d.NextBlock(0) {
		option := d.Val()
		if seen[option] && option != "header" {
			return d.Errf("%s already specified", option)
		}
		seen[option] = true
		switch option {
		case "method":
			var m string
			if !d.AllArgs(&m) {
				return d.ArgErr()
			}
			r.Method = strings.ToUpper(m)
			if r.Method != http.MethodGet && r.Method != http.MethodPost {
				return d.Errf("method must be GET or POST, not %q", m)
			}
		case "header":
			var name, value string
			if !d.AllArgs(&name, &value) {
				return d.ArgErr()
			}
			if r.Headers == nil {
				r.Headers = make(http.Header)
			}
			r.Headers.Add(name, value)
		case "timeout":
			v, err := parseDuration(d)
			if err != nil {
				return err
			}
			r.Timeout = v
		case "cache":
			v, err := parseDuration(d)
			if err != nil {
				return err
			}
			r.Cache = v
		case "max_in_flight":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return d.Errf("max_in_flight: want a positive whole number, not %q", v)
			}
			r.MaxInFlight = n
		default:
			return d.Errf("unknown option %q", option)
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner      = (*HTTPResolver)(nil)
	_ caddy.CleanerUpper     = (*HTTPResolver)(nil)
	_ caddyfile.Unmarshaler  = (*HTTPResolver)(nil)
	_ tokenresolver.Resolver = (*HTTPResolver)(nil)
)
