package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

func init() {
	caddy.RegisterModule(JWTResolver{})
}

// JWTResolver treats the token as a signed JSON Web Token that carries its
// target in the claims "host" and "port" (as websockify's JWTTokenApi does),
// optionally with "password". Its "exp" and "nbf" are enforced when present,
// and "exp" is the token's expiry.
//
// The key decides which signature algorithms are accepted: HS256, HS384 and
// HS512 with a secret; RS* and PS* with an RSA public key, the ES* of the
// curve with an ECDSA key, EdDSA with an Ed25519 key. Unsigned tokens ("alg":
// "none") are always refused. An invalid, expired or not-yet-valid token gets
// the client 403.
type JWTResolver struct {
	// The HMAC secret; placeholders such as {env.JWT_SECRET} or
	// {file./etc/caddy/jwt-secret} work. Set either secret or key.
	Secret string `json:"secret,omitempty"`

	// The path of a PEM file holding the public key (RSA, ECDSA or Ed25519;
	// "PUBLIC KEY", "RSA PUBLIC KEY" or a "CERTIFICATE"). It is read when
	// the configuration loads. Set either secret or key.
	KeyFile string `json:"key,omitempty"`

	// When set, the token's "iss" must equal it. Default: not checked.
	Issuer string `json:"issuer,omitempty"`

	// When set, the token's "aud" must contain it. Default: not checked.
	Audience string `json:"audience,omitempty"`

	jwt *tokenresolver.JWT
}

// CaddyModule returns the Caddy module information.
func (JWTResolver) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.vnc_proxy.resolvers.jwt",
		New: func() caddy.Module { return new(JWTResolver) },
	}
}

// Provision reads the key and prepares the verifier.
func (r *JWTResolver) Provision(ctx caddy.Context) error {
	warnLiteralSecrets(ctx.Logger(), []secretOption{{"resolver jwt secret", r.Secret, "JWT_SECRET"}})
	repl := caddy.NewReplacer()
	secret := repl.ReplaceKnown(r.Secret, "")
	keyFile := repl.ReplaceKnown(r.KeyFile, "")
	if (secret == "") == (keyFile == "") {
		if r.Secret != "" && secret == "" {
			return errors.New("jwt: the secret is empty after replacing placeholders")
		}
		return errors.New("jwt: set either secret or key")
	}
	r.jwt = &tokenresolver.JWT{
		Secret:   []byte(secret),
		Issuer:   repl.ReplaceKnown(r.Issuer, ""),
		Audience: repl.ReplaceKnown(r.Audience, ""),
	}
	if keyFile != "" {
		pemBytes, err := os.ReadFile(keyFile)
		if err != nil {
			return fmt.Errorf("jwt: reading key: %w", err)
		}
		k, err := tokenresolver.ParsePublicKeyPEM(pemBytes)
		if err != nil {
			return fmt.Errorf("jwt: key %s: %w", keyFile, err)
		}
		r.jwt.Secret = nil
		r.jwt.PublicKey = k
	}
	return r.jwt.Init()
}

// Resolve verifies the token and returns the target from its claims.
func (r *JWTResolver) Resolve(ctx context.Context, q tokenresolver.Query) (tokenresolver.Target, error) {
	return r.jwt.Resolve(ctx, q)
}

// UnmarshalCaddyfile sets up the resolver from Caddyfile tokens:
//
//	resolver jwt {
//		secret <value>  |  key <pem-file>
//		issuer <iss>
//		audience <aud>
//	}
func (r *JWTResolver) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the resolver's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		option := d.Val()
		var dst *string
		switch option {
		case "secret":
			dst = &r.Secret
		case "key":
			dst = &r.KeyFile
		case "issuer":
			dst = &r.Issuer
		case "audience":
			dst = &r.Audience
		default:
			return d.Errf("unknown option %q", option)
		}
		if *dst != "" {
			return d.Errf("%s already specified", option)
		}
		if !d.AllArgs(dst) {
			return d.ArgErr()
		}
		if *dst == "" {
			return d.Errf("%s must not be empty", option)
		}
	}
	if r.Secret != "" && r.KeyFile != "" {
		return d.Err("set either secret or key, not both")
	}
	if r.Secret == "" && r.KeyFile == "" {
		return d.Err("a secret or a key is required")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner      = (*JWTResolver)(nil)
	_ caddyfile.Unmarshaler  = (*JWTResolver)(nil)
	_ tokenresolver.Resolver = (*JWTResolver)(nil)
)
