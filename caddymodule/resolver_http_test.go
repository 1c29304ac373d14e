package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

// unmarshalResolver feeds a resolver's Caddyfile tokens (starting at its
// name) to mod and returns mod as JSON. A one-line block "{ a b }" in input
// is spread over lines first, as the Caddyfile wants it.
func unmarshalResolver(t *testing.T, input string, mod caddyfile.Unmarshaler) (string, error) {
	t.Helper()
	if strings.HasSuffix(input, " }") && !strings.Contains(input, "\n") {
		input = strings.Replace(input, " { ", " {\n", 1)
		input = strings.TrimSuffix(input, " }") + "\n}"
	}
	err := mod.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(mod)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), nil
}

// checkUnmarshal unmarshals each case's Caddyfile into a fresh module and
// compares the module's JSON with the case's.
func checkUnmarshal(t *testing.T, newModule func() caddyfile.Unmarshaler, cases []struct{ input, want string }) {
	t.Helper()
	for _, c := range cases {
		got, err := unmarshalResolver(t, c.input, newModule())
		if err != nil {
			t.Errorf("%s: %v", c.input, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s:\ngot  %s\nwant %s", c.input, got, c.want)
		}
	}
}

// adaptSite adapts a Caddyfile site whose body is siteBody and returns the
// vnc_proxy handler's "resolver" object as compact JSON.
func adaptResolver(t *testing.T, siteBody string) string {
	t.Helper()
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(":8080 {\n"+siteBody+"\n}\n"), nil)
	if err != nil {
		t.Fatalf("adapting: %v", err)
	}
	var c struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []json.RawMessage `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	for _, srv := range c.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			for _, h := range r.Handle {
				var hh struct {
					Handler  string          `json:"handler"`
					Resolver json.RawMessage `json:"resolver"`
				}
				json.Unmarshal(h, &hh)
				if hh.Handler == "vnc_proxy" {
					return string(hh.Resolver)
				}
			}
		}
	}
	t.Fatalf("no vnc_proxy handler in %s", cfg)
	return ""
}

// provision provisions a resolver module the way Caddy does when it loads a
// config, and cleans it up when the test ends.
func provision(t *testing.T, mod caddy.Provisioner) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := mod.Provision(ctx); err != nil {
		return err
	}
	if c, ok := mod.(caddy.CleanerUpper); ok {
		t.Cleanup(func() { c.Cleanup() })
	}
	return nil
}

func TestHTTPResolverCaddyfile(t *testing.T) {
	cases := []struct {
		input, want string
	}{
		{`http https://api.internal/console/{token}`, `{"url":"https://api.internal/console/{token}"}`},
		{`http https://api.internal/lookup {
			method post
			header Authorization "Bearer {env.API_KEY}"
			header X-Tenant a
			header X-Tenant b
			timeout 500ms
			cache 30s
		}`, `{"url":"https://api.internal/lookup","method":"POST","headers":{"Authorization":["Bearer {env.API_KEY}"],"X-Tenant":["a","b"]},"timeout":500000000,"cache":30000000000}`},
	}
	checkUnmarshal(t, func() caddyfile.Unmarshaler { return &HTTPResolver{} }, cases)

	for _, bad := range []string{
		`http`,
		`http a b`,
		`http https://x/{token} { method PUT }`,
		`http https://x/{token} { method }`,
		`http https://x/{token} {
			method GET
			method POST
		}`,
		`http https://x/{token} { header X }`,
		`http https://x/{token} { header X a b }`,
		`http https://x/{token} {
			timeout 1s
			timeout 2s
		}`,
		`http https://x/{token} { timeout soon }`,
		`http https://x/{token} { cache -1s }`,
		`http https://x/{token} { retries 3 }`,
	} {
		if _, err := unmarshalResolver(t, bad, &HTTPResolver{}); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestHTTPResolverAdapt(t *testing.T) {
	got := adaptResolver(t, `vnc_proxy {
		resolver http http://127.0.0.1:9000/tokens/{token} {
			header X-Api-Key {env.API_KEY}
			timeout 1s
		}
	}`)
	want := `{"headers":{"X-Api-Key":["{env.API_KEY}"]},"source":"http","timeout":1000000000,"url":"http://127.0.0.1:9000/tokens/{token}"}`
	if got != want {
		t.Errorf("adapted resolver:\ngot  %s\nwant %s", got, want)
	}
}

func TestHTTPResolverProvision(t *testing.T) {
	t.Setenv("VNC_TEST_API_KEY", "k-123")
	t.Setenv("VNC_TEST_API_HOST", "")
	seen := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tokens/abc" {
			http.NotFound(w, r)
			return
		}
		seen <- r.Header.Clone()
		io.WriteString(w, `{"host": "10.1.2.3", "port": 5900}`)
	}))
	defer srv.Close()
	t.Setenv("VNC_TEST_API_HOST", strings.TrimPrefix(srv.URL, "http://"))

	r := &HTTPResolver{
		URL:     "http://{env.VNC_TEST_API_HOST}/tokens/{token}",
		Headers: http.Header{"X-Api-Key": {"{env.VNC_TEST_API_KEY}"}},
	}
	if err := provision(t, r); err != nil {
		t.Fatal(err)
	}
	got, err := r.Resolve(context.Background(), tokenresolver.Query{Token: "abc", ClientAddr: "192.0.2.1:4000", Origin: "https://c.example"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Address != "10.1.2.3:5900" {
		t.Errorf("got %+v", got)
	}
	h := <-seen
	if h.Get("X-Api-Key") != "k-123" || h.Get(tokenresolver.HeaderClientAddr) != "192.0.2.1:4000" || h.Get(tokenresolver.HeaderOrigin) != "https://c.example" {
		t.Errorf("headers seen by the service: %v", h)
	}
	if _, err := r.Resolve(context.Background(), tokenresolver.Query{Token: "other"}); !errors.Is(err, tokenresolver.ErrNotFound) {
		t.Errorf("unknown token: got %v", err)
	}

	for _, bad := range []*HTTPResolver{
		{URL: "not a url"},
		{URL: "http://x/static", Method: "GET"},
		{URL: "http://x/{token}", Method: "DELETE"},
	} {
		if err := provision(t, bad); err == nil {
			t.Errorf("provisioned %+v", bad)
		}
	}
}

// TestResolverJSON decodes the resolvers' documented JSON forms, rejecting
// unknown fields, so the docs and the struct tags agree.
func TestResolverJSON(t *testing.T) {
	for _, c := range []struct {
		js  string
		mod any
	}{
		{`{"url": "https://console-api.internal/v1/consoles/{token}", "method": "GET",
			"headers": {"Authorization": ["Bearer {env.CONSOLE_API_KEY}"]}, "timeout": "2s", "cache": "30s"}`, &HTTPResolver{}},
		{`{"addresses": ["redis.internal:6379"], "key_prefix": "vnc:", "db": 0, "username": "console",
			"password": "{env.REDIS_PASSWORD}", "tls": true, "timeout": "2s", "one_time": true, "sentinel_master": ""}`, &RedisResolver{}},
		{`{"key": "/etc/caddy/console-api.pub", "secret": "", "issuer": "https://console-api.internal", "audience": "vnc-proxy"}`, &JWTResolver{}},
	} {
		dec := json.NewDecoder(strings.NewReader(c.js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(c.mod); err != nil {
			t.Errorf("%T: %v", c.mod, err)
		}
	}
}
