package tokenresolver

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWT resolves a token that is itself a signed JSON Web Token carrying its
// target in the claims "host" and "port" (websockify's JWTTokenApi), with the
// optional claims "view_only", "clipboard", "record" and "username". "exp"
// and "nbf" are enforced when present, "iss" and "aud" when Issuer and
// Audience are set.
//
// A token with a "password" claim is refused: a JWT is signed, not
// encrypted, so its holder can read every claim, and a VNC password in one
// would reach the browser the proxy keeps it from. The password belongs in
// the proxy's configuration (vnc_auth) or a stored record (Redis, callback).
//
// The key decides which algorithms are accepted: HS256/384/512 for a Secret;
// RS* and PS* for an RSA key, the ES* matching the curve of an ECDSA key,
// EdDSA for an Ed25519 key. "none" is never accepted, nor an HMAC signature
// made with a public key.
//
// Configure the exported fields, then call Init once before the first Resolve.
type JWT struct {
	// Secret is the HMAC key. Set either Secret or PublicKey.
	Secret []byte
	// PublicKey is an *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	// (see ParsePublicKeyPEM).
	PublicKey crypto.PublicKey
	// Issuer, when set, must equal the token's "iss".
	Issuer string
	// Audience, when set, must be among the token's "aud".
	Audience string

	parser *jwt.Parser
	key    any
	now    func() time.Time
}

// Init checks the key and prepares the parser.
func (j *JWT) Init() error {
	if (len(j.Secret) == 0) == (j.PublicKey == nil) {
		return errors.New("jwt: set either a secret or a public key")
	}
	var methods []string
	switch k := j.PublicKey.(type) {
	case nil:
		methods = []string{"HS256", "HS384", "HS512"}
		j.key = j.Secret
	case *rsa.PublicKey:
		methods = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
		j.key = k
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			methods = []string{"ES256"}
		case elliptic.P384():
			methods = []string{"ES384"}
		case elliptic.P521():
			methods = []string{"ES512"}
		default:
			return errors.New("jwt: ECDSA key on a curve JWT does not use (want P-256, P-384 or P-521)")
		}
		j.key = k
	case ed25519.PublicKey:
		methods = []string{"EdDSA"}
		j.key = k
	default:
		return fmt.Errorf("jwt: unsupported public key type %T", j.PublicKey)
	}
	if j.now == nil {
		j.now = time.Now
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithTimeFunc(func() time.Time { return j.now() })}
	if j.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(j.Issuer))
	}
	if j.Audience != "" {
		opts = append(opts, jwt.WithAudience(j.Audience))
	}
	j.parser = jwt.NewParser(opts...)
	return nil
}

// ParsePublicKeyPEM reads the first public key in PEM data: a PKIX "PUBLIC
// KEY" (RSA, ECDSA or Ed25519), a PKCS #1 "RSA PUBLIC KEY", or the key of a
// "CERTIFICATE".
func ParsePublicKeyPEM(data []byte) (crypto.PublicKey, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM public key found")
		}
		switch block.Type {
		case "PUBLIC KEY":
			return x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			return x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, err
			}
			return c.PublicKey, nil
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			return nil, errors.New("PEM holds a private key: give the public key only")
		}
	}
}

// consoleClaims are the claims of a console JWT.
type consoleClaims struct {
	jwt.RegisteredClaims
	Host string `json:"host"`
	// Port is a JSON number or a string; with the host "unix_socket", the
	// socket's path (as in websockify).
	Port     any     `json:"port"`
	Password *string `json:"password,omitempty"`
	Username string  `json:"username,omitempty"`
	ViewOnly bool    `json:"view_only,omitempty"`
	// Clipboard is "both", "copy", "paste" or "none" (see Target).
	Clipboard *string `json:"clipboard,omitempty"`
	Record    bool    `json:"record,omitempty"`
}

// Resolve verifies the token and returns the target from its claims.
func (j *JWT) Resolve(_ context.Context, q Query) (Target, error) {
	if q.Token == "" {
		return Target{}, ErrNotFound
	}
	var c consoleClaims
	tok, err := j.parser.ParseWithClaims(q.Token, &c, j.keyFunc)
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return Target{}, ErrExpired
		}
		return Target{}, fmt.Errorf("%w: jwt: %v", ErrNotFound, err)
	}
	// RFC 7515 4.1.11: a recipient must refuse a token whose "crit" names
	// an extension it does not understand, and this one understands none.
	if _, ok := tok.Header["crit"]; ok {
		return Target{}, fmt.Errorf("%w: jwt: a crit header names extensions this proxy does not understand", ErrNotFound)
	}
	return targetFromClaims(&c)
}

func (j *JWT) keyFunc(*jwt.Token) (any, error) { return j.key, nil }

// targetFromClaims turns verified claims into a target; a missing or bad host
// or port means the token is not a console token (ErrNotFound). Without a
// port claim, the host claim may hold a whole target such as "h:5900".
func targetFromClaims(c *consoleClaims) (Target, error) {
	if c.Host == "" {
		return Target{}, fmt.Errorf("%w: jwt: no host claim", ErrNotFound)
	}
	if c.Password != nil {
		return Target{}, fmt.Errorf("%w: jwt: a password claim is readable by whoever holds the token; configure vnc_auth { password } instead", ErrNotFound)
	}
	var t Target
	var err error
	if c.Port == nil {
		t, err = ParseTarget(c.Host)
	} else {
		t, err = TargetFromHostPort(c.Host, c.Port)
	}
	if err != nil {
		return Target{}, fmt.Errorf("%w: jwt: host and port claims: %w", ErrNotFound, err)
	}
	t.Username = c.Username
	t.ViewOnly = c.ViewOnly
	if c.Clipboard != nil {
		if t.Clipboard, err = parseClipboard(*c.Clipboard); err != nil {
			return Target{}, fmt.Errorf("%w: jwt: %w", ErrNotFound, err)
		}
	}
	t.Record = c.Record
	if c.ExpiresAt != nil {
		t.ExpiresAt = c.ExpiresAt.Time
	}
	return t, nil
}
