package caddymodule

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

func init() {
	caddy.RegisterModule(NovaResolver{})
}

// NovaResolver resolves the console tokens OpenStack's nova hands out, by
// asking nova's compute API (GET /os-console-auth-tokens/{token},
// microversion 2.31) with a Keystone v3 token it gets and renews itself.
// nova's 404 (unknown or expired token) is the browser's 403; a Keystone or
// nova failure or timeout, 503. It serves nova's novnc, spice-html5 and
// serial tokens alike (nova's answer does not say which type a token is):
// use it with protocol vnc, spice or serial.
type NovaResolver struct {
	// The compute API's endpoint, e.g. https://nova.internal:8774/v2.1.
	// Required.
	ComputeURL string `json:"compute_url,omitempty"`

	// Keystone's v3 endpoint, e.g. https://keystone.internal:5000/v3.
	// Required.
	Keystone string `json:"keystone,omitempty"`

	// An application credential's id and secret; or else the password
	// method's username, password and project. Placeholders such as
	// {env.NOVA_APP_CRED_SECRET} work in all of them.
	ApplicationCredentialID     string `json:"application_credential_id,omitempty"`
	ApplicationCredentialSecret string `json:"application_credential_secret,omitempty"`
	Username                    string `json:"username,omitempty"`
	Password                    string `json:"password,omitempty"`
	Project                     string `json:"project,omitempty"`
	// The user's and the project's domains. Default: "Default".
	UserDomain    string `json:"user_domain,omitempty"`
	ProjectDomain string `json:"project_domain,omitempty"`

	// A PEM file with the CA certificates of a private cloud's endpoints.
	// Default: the system's roots.
	CA string `json:"ca,omitempty"`

	// How long each Keystone and each nova request may take. Default: 2s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	nova *tokenresolver.Nova
}

// CaddyModule returns the Caddy module information.
func (NovaResolver) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.vnc_proxy.resolvers.nova",
		New: func() caddy.Module { return new(NovaResolver) },
	}
}

// Provision replaces placeholders and prepares the client.
func (r *NovaResolver) Provision(ctx caddy.Context) error {
	warnLiteralSecrets(ctx.Logger(), []secretOption{
		{"resolver nova password", r.Password, "NOVA_PASSWORD"},
		{"resolver nova application_credential secret", r.ApplicationCredentialSecret, "NOVA_APP_CREDENTIAL_SECRET"},
	})
	repl := caddy.NewReplacer()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if r.CA != "" {
		pem, err := os.ReadFile(repl.ReplaceKnown(r.CA, ""))
		if err != nil {
			return fmt.Errorf("nova: reading ca: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("nova: ca %s holds no PEM certificate", r.CA)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	r.nova = &tokenresolver.Nova{
		ComputeURL:                  repl.ReplaceKnown(r.ComputeURL, ""),
		KeystoneURL:                 repl.ReplaceKnown(r.Keystone, ""),
		ApplicationCredentialID:     repl.ReplaceKnown(r.ApplicationCredentialID, ""),
		ApplicationCredentialSecret: repl.ReplaceKnown(r.ApplicationCredentialSecret, ""),
		Username:                    repl.ReplaceKnown(r.Username, ""),
		Password:                    repl.ReplaceKnown(r.Password, ""),
		Project:                     repl.ReplaceKnown(r.Project, ""),
		UserDomain:                  repl.ReplaceKnown(r.UserDomain, ""),
		ProjectDomain:               repl.ReplaceKnown(r.ProjectDomain, ""),
		Timeout:                     time.Duration(r.Timeout),
		Client:                      &http.Client{Transport: transport},
	}
	return r.nova.Init()
}

// Cleanup ends requests in flight and closes idle connections.
func (r *NovaResolver) Cleanup() error {
	if r.nova == nil {
		return nil
	}
	return r.nova.Close()
}

// Resolve asks nova which console the token stands for.
func (r *NovaResolver) Resolve(ctx context.Context, q tokenresolver.Query) (tokenresolver.Target, error) {
	return r.nova.Resolve(ctx, q)
}

// UnmarshalCaddyfile sets up the resolver from Caddyfile tokens:
//
//	resolver nova <compute-api-url> {
//		keystone <identity-url>
//		application_credential <id> <secret>
//		username <name>
//		password <secret>
//		project <name>
//		user_domain <name>
//		project_domain <name>
//		ca <pem-file>
//		timeout <duration>
//	}
func (r *NovaResolver) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the resolver's name
	if !d.AllArgs(&r.ComputeURL) {
		return d.Err("resolver nova needs the compute API's URL, e.g. https://nova.internal:8774/v2.1")
	}
	seen := make(map[string]bool)
	for d.NextBlock(0) {
		option := d.Val()
		if seen[option] {
			return d.Errf("%s already specified", option)
		}
		seen[option] = true
		var field *string
		switch option {
		case "application_credential":
			if !d.AllArgs(&r.ApplicationCredentialID, &r.ApplicationCredentialSecret) {
				return d.Err("application_credential needs an id and a secret")
			}
			continue
		case "timeout":
			v, err := parseDuration(d)
			if err != nil {
				return err
			}
			r.Timeout = v
			continue
		case "keystone":
			field = &r.Keystone
		case "username":
			field = &r.Username
		case "password":
			field = &r.Password
		case "project":
			field = &r.Project
		case "user_domain":
			field = &r.UserDomain
		case "project_domain":
			field = &r.ProjectDomain
		case "ca":
			field = &r.CA
		default:
			return d.Errf("unknown option %q", option)
		}
		if !d.AllArgs(field) {
			return d.ArgErr()
		}
	}
	if r.Keystone == "" {
		return d.Err("resolver nova needs keystone <identity-url>")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner      = (*NovaResolver)(nil)
	_ caddy.CleanerUpper     = (*NovaResolver)(nil)
	_ caddyfile.Unmarshaler  = (*NovaResolver)(nil)
	_ tokenresolver.Resolver = (*NovaResolver)(nil)
)
