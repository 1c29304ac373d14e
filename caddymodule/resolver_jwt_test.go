package caddymodule

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

func TestJWTResolverCaddyfile(t *testing.T) {
	cases := []struct {
		input, want string
	}{
		{`jwt { secret {env.JWT_SECRET} }`, `{"secret":"{env.JWT_SECRET}"}`},
		{`jwt {
			key /etc/caddy/console-api.pub
			issuer https://console-api.internal
			audience vnc
		}`, `{"key":"/etc/caddy/console-api.pub","issuer":"https://console-api.internal","audience":"vnc"}`},
	}
	checkUnmarshal(t, func() caddyfile.Unmarshaler { return &JWTResolver{} }, cases)

	for _, bad := range []string{
		`jwt`,
		`jwt extra { secret s }`,
		`jwt { issuer x }`,
		`jwt {
			secret s
			key /k.pem
		}`,
		`jwt {
			secret s
			secret t
		}`,
		`jwt { secret }`,
		`jwt { secret "" }`,
		`jwt { secret a b }`,
		`jwt {
			secret s
			algorithm none
		}`,
	} {
		if _, err := unmarshalResolver(t, bad, &JWTResolver{}); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestJWTResolverAdapt(t *testing.T) {
	got := adaptResolver(t, `vnc_proxy {
		resolver jwt {
			key /etc/caddy/console.pub
		}
	}`)
	want := `{"key":"/etc/caddy/console.pub","source":"jwt"}`
	if got != want {
		t.Errorf("adapted resolver:\ngot  %s\nwant %s", got, want)
	}
}

func TestJWTResolverProvision(t *testing.T) {
	ctx := context.Background()
	claims := jwt.MapClaims{"host": "10.3.4.5", "port": 5902, "exp": time.Now().Add(time.Hour).Unix()}

	t.Run("secret from env", func(t *testing.T) {
		t.Setenv("VNC_TEST_JWT_SECRET", "shh, a secret")
		r := &JWTResolver{Secret: "{env.VNC_TEST_JWT_SECRET}"}
		if err := provision(t, r); err != nil {
			t.Fatal(err)
		}
		tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("shh, a secret"))
		got, err := r.Resolve(ctx, tokenresolver.Query{Token: tok})
		if err != nil || got.Address != "10.3.4.5:5902" {
			t.Fatalf("got %+v, %v", got, err)
		}
		literal, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("{env.VNC_TEST_JWT_SECRET}"))
		if _, err := r.Resolve(ctx, tokenresolver.Query{Token: literal}); !errors.Is(err, tokenresolver.ErrNotFound) {
			t.Errorf("token signed with the unreplaced placeholder: got %v", err)
		}
	})

	t.Run("secret from a file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "jwt-secret")
		os.WriteFile(path, []byte("file secret\n"), 0o600)
		r := &JWTResolver{Secret: "{file." + path + "}"}
		if err := provision(t, r); err != nil {
			t.Fatal(err)
		}
		tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("file secret"))
		if _, err := r.Resolve(ctx, tokenresolver.Query{Token: tok}); err != nil {
			t.Fatalf("token signed with the file's secret (without its newline): %v", err)
		}
	})

	t.Run("Ed25519 key file", func(t *testing.T) {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(pub)
		path := filepath.Join(t.TempDir(), "console.pub")
		os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)

		r := &JWTResolver{KeyFile: path, Audience: "vnc"}
		if err := provision(t, r); err != nil {
			t.Fatal(err)
		}
		withAud := jwt.MapClaims{"aud": "vnc"}
		for k, v := range claims {
			withAud[k] = v
		}
		tok, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, withAud).SignedString(priv)
		got, err := r.Resolve(ctx, tokenresolver.Query{Token: tok})
		if err != nil || got.Address != "10.3.4.5:5902" {
			t.Fatalf("got %+v, %v", got, err)
		}
		noAud, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(priv)
		if _, err := r.Resolve(ctx, tokenresolver.Query{Token: noAud}); !errors.Is(err, tokenresolver.ErrNotFound) {
			t.Errorf("token without the audience: got %v", err)
		}
	})

	t.Run("bad config", func(t *testing.T) {
		t.Setenv("VNC_TEST_EMPTY", "")
		notPEM := filepath.Join(t.TempDir(), "x.pem")
		os.WriteFile(notPEM, []byte("not a key"), 0o600)
		for name, r := range map[string]*JWTResolver{
			"nothing":          {},
			"empty after env":  {Secret: "{env.VNC_TEST_EMPTY}"},
			"missing key file": {KeyFile: filepath.Join(t.TempDir(), "absent.pem")},
			"not PEM":          {KeyFile: notPEM},
			"both":             {Secret: "s", KeyFile: notPEM},
		} {
			if err := provision(t, r); err == nil {
				t.Errorf("%s: provisioned", name)
			}
		}
	})
}
