package tokenresolver

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testKeys are generated once: RSA key generation is slow.
var testKeys = sync.OnceValue(func() (k struct {
	rsa   *rsa.PrivateKey
	ec256 *ecdsa.PrivateKey
	ec384 *ecdsa.PrivateKey
	ed    ed25519.PrivateKey
}) {
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.ec256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	if k.ec384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		panic(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	return k
})

func publicKeyPEM(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatalf("signing with %s: %v", m.Alg(), err)
	}
	return s
}

// signWithHeader signs claims with HS256 and one more header field.
func signWithHeader(t testing.TB, key []byte, claims jwt.MapClaims, name string, value any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header[name] = value
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newJWT(t testing.TB, j *JWT) *JWT {
	t.Helper()
	if err := j.Init(); err != nil {
		t.Fatalf("Init: %v", err)
	}
	return j
}

func consoleClaimsFor(exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{"host": "10.0.0.9", "port": 5901, "exp": exp.Unix()}
}

func TestJWTAccepted(t *testing.T) {
	k := testKeys()
	secret := []byte("a shared secret of some length")
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	cases := []struct {
		name   string
		j      *JWT
		method jwt.SigningMethod
		key    any
	}{
		{"HS256", &JWT{Secret: secret}, jwt.SigningMethodHS256, secret},
		{"HS512", &JWT{Secret: secret}, jwt.SigningMethodHS512, secret},
		{"RS256", &JWT{PublicKey: &k.rsa.PublicKey}, jwt.SigningMethodRS256, k.rsa},
		{"PS256", &JWT{PublicKey: &k.rsa.PublicKey}, jwt.SigningMethodPS256, k.rsa},
		{"ES256", &JWT{PublicKey: &k.ec256.PublicKey}, jwt.SigningMethodES256, k.ec256},
		{"ES384", &JWT{PublicKey: &k.ec384.PublicKey}, jwt.SigningMethodES384, k.ec384},
		{"EdDSA", &JWT{PublicKey: k.ed.Public()}, jwt.SigningMethodEdDSA, k.ed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := newJWT(t, c.j)
			got, err := j.Resolve(context.Background(), Query{Token: sign(t, c.method, c.key, consoleClaimsFor(exp))})
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got.Network != "tcp" || got.Address != "10.0.0.9:5901" || !got.ExpiresAt.Equal(exp) {
				t.Errorf("got %+v", got)
			}
		})
	}
}

func TestJWTClaims(t *testing.T) {
	secret := []byte("s")
	j := newJWT(t, &JWT{Secret: secret})
	cases := []struct {
		name   string
		claims jwt.MapClaims
		want   Target
		err    error
	}{
		{"port as string", jwt.MapClaims{"host": "h.internal", "port": "5902"}, Target{Network: "tcp", Address: "h.internal:5902"}, nil},
		{"IPv6 host", jwt.MapClaims{"host": "fd00::7", "port": 5900}, Target{Network: "tcp", Address: "[fd00::7]:5900"}, nil},
		{"unix socket", jwt.MapClaims{"host": "unix_socket", "port": "/run/vnc.sock"}, Target{Network: "unix", Address: "/run/vnc.sock"}, nil},
		{"host:port without port", jwt.MapClaims{"host": "h:5903"}, Target{Network: "tcp", Address: "h:5903"}, nil},
		{"view_only and username", jwt.MapClaims{"host": "h", "port": 5900, "view_only": true, "username": "u"}, Target{Network: "tcp", Address: "h:5900", ViewOnly: true, Username: "u"}, nil},
		{"clipboard", jwt.MapClaims{"host": "h", "port": 5900, "clipboard": "paste"}, Target{Network: "tcp", Address: "h:5900", Clipboard: "paste"}, nil},
		{"unknown clipboard grant", jwt.MapClaims{"host": "h", "port": 5900, "clipboard": "all"}, Target{}, ErrNotFound},
		{"record", jwt.MapClaims{"host": "h", "port": 5900, "record": true}, Target{Network: "tcp", Address: "h:5900", Record: true}, nil},
		// A JWT's holder can read its claims: a VNC password must not be one.
		{"password refused", jwt.MapClaims{"host": "h", "port": 5900, "password": "pw"}, Target{}, ErrNotFound},
		{"empty password refused", jwt.MapClaims{"host": "h", "port": 5900, "password": ""}, Target{}, ErrNotFound},
		{"no exp", jwt.MapClaims{"host": "h", "port": 5900}, Target{Network: "tcp", Address: "h:5900"}, nil},
		{"no host", jwt.MapClaims{"port": 5900}, Target{}, ErrNotFound},
		{"bad port", jwt.MapClaims{"host": "h", "port": 70000}, Target{}, ErrNotFound},
		{"fractional port", jwt.MapClaims{"host": "h", "port": 59.5}, Target{}, ErrNotFound},
		{"host without port", jwt.MapClaims{"host": "h"}, Target{}, ErrNotFound},
		{"port of wrong type", jwt.MapClaims{"host": "h", "port": []int{1}}, Target{}, ErrNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := j.Resolve(context.Background(), Query{Token: sign(t, jwt.SigningMethodHS256, secret, c.claims)})
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("got %+v, %v; want %v", got, err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestJWTRefused(t *testing.T) {
	k := testKeys()
	secret := []byte("a shared secret of some length")
	hour := time.Hour
	good := consoleClaimsFor(time.Now().Add(hour))
	with := func(extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{}
		for k, v := range good {
			c[k] = v
		}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	rsaPEM := publicKeyPEM(t, &k.rsa.PublicKey)
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, good).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	hmac := &JWT{Secret: secret, Issuer: "console-api", Audience: "vnc"}
	rsaJWT := &JWT{PublicKey: &k.rsa.PublicKey}
	ecJWT := &JWT{PublicKey: &k.ec256.PublicKey}
	issued := with(jwt.MapClaims{"iss": "console-api", "aud": "vnc"})
	cases := []struct {
		name  string
		j     *JWT
		token string
		want  error
	}{
		{"expired", hmac, sign(t, jwt.SigningMethodHS256, secret, with(jwt.MapClaims{"iss": "console-api", "aud": "vnc", "exp": time.Now().Add(-time.Minute).Unix()})), ErrExpired},
		{"not yet valid", hmac, sign(t, jwt.SigningMethodHS256, secret, with(jwt.MapClaims{"iss": "console-api", "aud": "vnc", "nbf": time.Now().Add(time.Minute).Unix()})), ErrNotFound},
		{"missing iss", hmac, sign(t, jwt.SigningMethodHS256, secret, with(jwt.MapClaims{"aud": "vnc"})), ErrNotFound},
		{"wrong iss", hmac, sign(t, jwt.SigningMethodHS256, secret, with(jwt.MapClaims{"iss": "evil", "aud": "vnc"})), ErrNotFound},
		{"wrong aud", hmac, sign(t, jwt.SigningMethodHS256, secret, with(jwt.MapClaims{"iss": "console-api", "aud": "other"})), ErrNotFound},
		{"wrong secret", hmac, sign(t, jwt.SigningMethodHS256, []byte("another secret"), issued), ErrNotFound},
		{"alg none to HMAC", hmac, none, ErrNotFound},
		{"alg none to RSA", rsaJWT, none, ErrNotFound},
		{"wrong RSA key", rsaJWT, sign(t, jwt.SigningMethodRS256, otherRSA, good), ErrNotFound},
		// Algorithm confusion: an HMAC signature keyed with the public key's
		// PEM, which an attacker knows.
		{"HS256 with the RSA public key as secret", rsaJWT, sign(t, jwt.SigningMethodHS256, rsaPEM, good), ErrNotFound},
		{"RS256 to an HMAC resolver", hmac, sign(t, jwt.SigningMethodRS256, k.rsa, issued), ErrNotFound},
		{"ES384 to a P-256 key", ecJWT, sign(t, jwt.SigningMethodES384, k.ec384, good), ErrNotFound},
		{"EdDSA to an RSA key", rsaJWT, sign(t, jwt.SigningMethodEdDSA, k.ed, good), ErrNotFound},
		{"tampered claims", rsaJWT, tamper(sign(t, jwt.SigningMethodRS256, k.rsa, good)), ErrNotFound},
		{"garbage", hmac, "not.a.jwt", ErrNotFound},
		{"empty", hmac, "", ErrNotFound},
		// RFC 7515 4.1.11: an extension the recipient does not understand.
		{"crit header", hmac, signWithHeader(t, secret, issued, "crit", []string{"http://example.com/must-check"}), ErrNotFound},
		{"empty crit header", hmac, signWithHeader(t, secret, issued, "crit", []string{}), ErrNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := newJWT(t, c.j)
			got, err := j.Resolve(context.Background(), Query{Token: c.token})
			if !errors.Is(err, c.want) {
				t.Fatalf("got %+v, %v; want %v", got, err, c.want)
			}
			if len(c.token) > 8 {
				checkErrorHidesToken(t, err, c.token)
			}
		})
	}
	// The accepted form of the same claims, to show the refusals are about
	// the one thing each case changes.
	if _, err := newJWT(t, hmac).Resolve(context.Background(), Query{Token: sign(t, jwt.SigningMethodHS256, secret, issued)}); err != nil {
		t.Errorf("valid token with iss and aud refused: %v", err)
	}
}

// tamper changes the payload of a signed token, keeping the signature.
func tamper(token string) string {
	parts := strings.Split(token, ".")
	claims := `{"host":"10.6.6.6","port":5900}`
	parts[1] = strings.TrimRight(jwtEncoding(claims), "=")
	return strings.Join(parts, ".")
}

func jwtEncoding(s string) string {
	return (&jwt.Token{}).EncodeSegment([]byte(s))
}

func TestJWTConfig(t *testing.T) {
	k := testKeys()
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, j := range map[string]*JWT{
		"no key":       {},
		"both":         {Secret: []byte("s"), PublicKey: &k.rsa.PublicKey},
		"private key":  {PublicKey: k.rsa},
		"P-224":        {PublicKey: &p224.PublicKey},
		"not a key":    {PublicKey: "secret"},
		"empty secret": {Secret: []byte{}},
	} {
		if err := j.Init(); err == nil {
			t.Errorf("%s: Init succeeded", name)
		}
	}
}

func TestParsePublicKeyPEM(t *testing.T) {
	k := testKeys()
	for name, pub := range map[string]crypto.PublicKey{
		"RSA": &k.rsa.PublicKey, "ECDSA": &k.ec256.PublicKey, "Ed25519": k.ed.Public(),
	} {
		got, err := ParsePublicKeyPEM(publicKeyPEM(t, pub))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !got.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Errorf("%s: got a different key", name)
		}
	}

	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)})
	if got, err := ParsePublicKeyPEM(pkcs1); err != nil || !k.rsa.PublicKey.Equal(got) {
		t.Errorf("PKCS #1: %v", err)
	}

	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "console-api"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.ec256.PublicKey, k.ec256)
	if err != nil {
		t.Fatal(err)
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if got, err := ParsePublicKeyPEM(cert); err != nil || !k.ec256.PublicKey.Equal(got) {
		t.Errorf("certificate: %v", err)
	}

	privDER, _ := x509.MarshalPKCS8PrivateKey(k.ed)
	for name, data := range map[string][]byte{
		"private key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}),
		"no PEM":      []byte("hello"),
		"bad DER":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := ParsePublicKeyPEM(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzJWTResolve(f *testing.F) {
	secret := []byte("fuzz secret")
	f.Add(sign(f, jwt.SigningMethodHS256, secret, jwt.MapClaims{"host": "h", "port": 5900}))
	f.Add(sign(f, jwt.SigningMethodHS256, secret, jwt.MapClaims{"host": "unix_socket", "port": "/s"}))
	f.Add(sign(f, jwt.SigningMethodHS256, secret, jwt.MapClaims{"host": "fe80::1", "port": "5900", "exp": 1}))
	f.Add("eyJhbGciOiJub25lIn0.eyJob3N0IjoiaCIsInBvcnQiOjF9.")
	f.Add("a.b.c")
	j := newJWT(f, &JWT{Secret: secret})
	f.Fuzz(func(t *testing.T, token string) {
		got, err := j.Resolve(context.Background(), Query{Token: token})
		if err != nil {
			if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrExpired) {
				t.Fatalf("error %v is neither ErrNotFound nor ErrExpired", err)
			}
			if len(token) > 16 && strings.Contains(err.Error(), token) {
				t.Fatalf("error %q repeats the token", err)
			}
			return
		}
		if got.Network == "" || got.Address == "" {
			t.Fatalf("empty target %+v", got)
		}
	})
}

// FuzzTargetFromClaims feeds verified-looking claims of any shape: the
// signature protects them from strangers, not from a buggy issuer.
func FuzzTargetFromClaims(f *testing.F) {
	f.Add("h", "5900", false)
	f.Add("fe80::1", "5900", true)
	f.Add("unix_socket", "/run/x", false)
	f.Add("h:1", "", false)
	f.Fuzz(func(t *testing.T, host, port string, numeric bool) {
		c := &consoleClaims{Host: host}
		if port != "" {
			c.Port = port
			if numeric {
				var n float64
				for _, r := range port {
					n = n*10 + float64(r%10)
				}
				c.Port = n
			}
		}
		got, err := targetFromClaims(c)
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("error %v is not ErrNotFound", err)
			}
			return
		}
		if got.Network != "tcp" && got.Network != "unix" || got.Address == "" {
			t.Fatalf("bad target %+v from %q %v", got, host, c.Port)
		}
	})
}
