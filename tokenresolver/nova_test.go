package tokenresolver

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func newNova(t *testing.T, srv *httptest.Server, n *Nova) *Nova {
	t.Helper()
	n.ComputeURL = srv.URL + "/v2.1"
	n.KeystoneURL = srv.URL + "/v3"
	if err := n.Init(); err != nil {
		t.Fatalf("Init: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

const novaConsoleToken = "a3a7b5c4-2f1e-4b3a-9c8d-7e6f5a4b3c2d"

func TestNovaResolve(t *testing.T) {
	s := newNovaStandIn()
	s.addConsole(novaConsoleToken, `{"instance_uuid": "f1e2d3c4-0000-4000-8000-000000000001", "host": "10.0.0.5", "port": 5901, "internal_access_path": null}`)
	s.addConsole("ipv6-console", `{"instance_uuid": "x", "host": "fd00::5", "port": 5902, "internal_access_path": null}`)
	s.addConsole("behind-a-proxy", `{"instance_uuid": "x", "host": "10.0.0.6", "port": 5900, "internal_access_path": "/websockify?vm=1"}`)
	srv := httptest.NewServer(s)
	defer srv.Close()
	ctx := context.Background()

	for name, n := range map[string]*Nova{
		"application credential": {ApplicationCredentialID: s.appCredID, ApplicationCredentialSecret: s.appCredSecret},
		"password":               {Username: s.user, Password: s.password, Project: s.project},
	} {
		t.Run(name, func(t *testing.T) {
			nova := newNova(t, srv, n)
			got, err := nova.Resolve(ctx, Query{Token: novaConsoleToken})
			if err != nil {
				t.Fatal(err)
			}
			if got.Network != "tcp" || got.Address != "10.0.0.5:5901" {
				t.Errorf("target %+v", got)
			}
			got, err = nova.Resolve(ctx, Query{Token: "ipv6-console"})
			if err != nil || got.Address != "[fd00::5]:5902" {
				t.Errorf("IPv6 console: %+v, %v", got, err)
			}
			if _, err := nova.Resolve(ctx, Query{Token: "unknown"}); !errors.Is(err, ErrNotFound) {
				t.Errorf("unknown token: %v, want ErrNotFound", err)
			}
			_, err = nova.Resolve(ctx, Query{Token: "behind-a-proxy"})
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "internal_access_path") {
				t.Errorf("internal_access_path: %v, want ErrUnavailable naming it", err)
			}
		})
	}

	t.Run("one Keystone login for many lookups, renewed once on 401", func(t *testing.T) {
		nova := newNova(t, srv, &Nova{ApplicationCredentialID: s.appCredID, ApplicationCredentialSecret: s.appCredSecret})
		logins0, _ := s.counts()
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if _, err := nova.Resolve(ctx, Query{Token: novaConsoleToken}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if logins, _ := s.counts(); logins != logins0+1 {
			t.Errorf("%d Keystone logins for 20 lookups, want 1", logins-logins0)
		}
		s.revokeAll()
		if _, err := nova.Resolve(ctx, Query{Token: novaConsoleToken}); err != nil {
			t.Fatalf("after the Keystone token was revoked: %v", err)
		}
		if logins, _ := s.counts(); logins != logins0+2 {
			t.Errorf("%d Keystone logins, want 2 (one renewal)", logins-logins0)
		}
	})

	t.Run("a Keystone token about to expire is replaced", func(t *testing.T) {
		s.tokenTTL = 30 * time.Second // under the renewal margin
		defer func() { s.tokenTTL = time.Hour }()
		nova := newNova(t, srv, &Nova{ApplicationCredentialID: s.appCredID, ApplicationCredentialSecret: s.appCredSecret})
		logins0, _ := s.counts()
		for range 2 {
			if _, err := nova.Resolve(ctx, Query{Token: novaConsoleToken}); err != nil {
				t.Fatal(err)
			}
		}
		if logins, _ := s.counts(); logins != logins0+2 {
			t.Errorf("%d logins for two lookups with a token expiring in 30s, want 2", logins-logins0)
		}
	})
}

// TestNovaConsoleTypes: nova answers os-console-auth-tokens alike for
// novnc, spice-html5 and serial tokens, with the console's host and port
// and not its type, so each resolves to its host and port. From
// microversion 2.99 a spice-direct console's answer also has a tls_port:
// the port is used; with no port, the console is refused, since the proxy
// does not speak TLS to the hypervisor.
func TestNovaConsoleTypes(t *testing.T) {
	s := newNovaStandIn()
	srv := httptest.NewServer(s)
	defer srv.Close()
	nova := newNova(t, srv, &Nova{ApplicationCredentialID: s.appCredID, ApplicationCredentialSecret: s.appCredSecret})
	const uuid = `"instance_uuid": "5d3c2b1a-0000-4000-8000-00000000000a"`
	for _, c := range []struct {
		consoleType, answer, want string
	}{
		{"novnc", `{` + uuid + `, "host": "10.0.0.5", "port": 5900, "internal_access_path": null}`, "10.0.0.5:5900"},
		{"spice-html5", `{` + uuid + `, "host": "10.0.0.5", "port": 5901, "internal_access_path": null}`, "10.0.0.5:5901"},
		{"serial", `{` + uuid + `, "host": "10.0.0.5", "port": 10000, "internal_access_path": null}`, "10.0.0.5:10000"},
		{"spice-direct, 2.99", `{` + uuid + `, "host": "10.0.0.5", "port": 5902, "internal_access_path": null, "tls_port": 5903}`, "10.0.0.5:5902"},
		{"spice-direct, 2.99, no TLS port", `{` + uuid + `, "host": "10.0.0.5", "port": 5904, "internal_access_path": null, "tls_port": null}`, "10.0.0.5:5904"},
	} {
		token := "console-" + strings.ReplaceAll(c.consoleType, " ", "")
		s.addConsole(token, c.answer)
		got, err := nova.Resolve(context.Background(), Query{Token: token})
		if err != nil || got.Network != "tcp" || got.Address != c.want {
			t.Errorf("%s token: %+v, %v; want tcp:%s", c.consoleType, got, err, c.want)
		}
	}

	s.addConsole("tls-only", `{`+uuid+`, "host": "10.0.0.5", "port": null, "internal_access_path": null, "tls_port": 5903}`)
	_, err := nova.Resolve(context.Background(), Query{Token: "tls-only"})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "tls_port") {
		t.Errorf("a console with only a tls_port: %v, want ErrUnavailable naming tls_port", err)
	}
}

func TestNovaRefused(t *testing.T) {
	s := newNovaStandIn()
	s.addConsole(novaConsoleToken, `{"instance_uuid": "x", "host": "10.0.0.5", "port": 5901, "internal_access_path": null}`)
	srv := httptest.NewServer(s)
	defer srv.Close()
	ctx := context.Background()

	wrong := newNova(t, srv, &Nova{ApplicationCredentialID: s.appCredID, ApplicationCredentialSecret: "wrong-secret-0000"})
	_, err := wrong.Resolve(ctx, Query{Token: novaConsoleToken})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "keystone answered 401") {
		t.Errorf("a wrong credential: %v, want ErrUnavailable from Keystone", err)
	}
	for _, secret := range []string{"wrong-secret-0000", novaConsoleToken, "gAAAAAB"} {
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("error %q contains a secret", err)
		}
	}

	s.failKeystone = true
	down := newNova(t, srv, &Nova{ApplicationCredentialID: s.appCredID, ApplicationCredentialSecret: s.appCredSecret})
	if _, err := down.Resolve(ctx, Query{Token: novaConsoleToken}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Keystone down: %v, want ErrUnavailable", err)
	}
	s.failKeystone = false

	slow := httptest.NewServer(&slowService{})
	defer slow.Close()
	n := &Nova{ApplicationCredentialID: "a", ApplicationCredentialSecret: "b", Timeout: 200 * time.Millisecond}
	n.ComputeURL, n.KeystoneURL = slow.URL+"/v2.1", slow.URL+"/v3"
	if err := n.Init(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	start := time.Now()
	if _, err := n.Resolve(ctx, Query{Token: novaConsoleToken}); !errors.Is(err, ErrUnavailable) || time.Since(start) > 2*time.Second {
		t.Errorf("a Keystone that does not answer: %v after %v, want ErrUnavailable within the timeout", err, time.Since(start))
	}
}

func TestNovaConfig(t *testing.T) {
	for i, n := range []*Nova{
		{ComputeURL: "nova", KeystoneURL: "https://k/v3", ApplicationCredentialID: "a", ApplicationCredentialSecret: "b"},
		{ComputeURL: "https://n/v2.1", KeystoneURL: "https://k/v3"},
		{ComputeURL: "https://n/v2.1", KeystoneURL: "https://k/v3", ApplicationCredentialID: "a"},
		{ComputeURL: "https://n/v2.1", KeystoneURL: "https://k/v3", Username: "u", Password: "p"},
		{ComputeURL: "https://n/v2.1", KeystoneURL: "https://k/v3", ApplicationCredentialID: "a", ApplicationCredentialSecret: "b", Username: "u"},
	} {
		if err := n.Init(); err == nil {
			t.Errorf("config %d: no error", i)
		}
	}
}

// TestParseValueNovaShape: the HTTP callback reads nova's answer, for
// services in front of nova.
func TestParseValueNovaShape(t *testing.T) {
	got, err := ParseValue([]byte(`{"console": {"instance_uuid": "x", "host": "10.0.0.5", "port": 5901, "internal_access_path": null, "tls_port": null}}`))
	if err != nil || got.Address != "10.0.0.5:5901" {
		t.Fatalf("%+v, %v", got, err)
	}
	if _, err := ParseValue([]byte(`{"console": {"host": "10.0.0.5", "port": 5901, "internal_access_path": "/x"}}`)); err == nil {
		t.Error("internal_access_path accepted")
	}
	if got, err := ParseValue([]byte(`{"console": {"host": "10.0.0.5", "port": 5901, "internal_access_path": null, "tls_port": 5902}}`)); err != nil || got.Address != "10.0.0.5:5901" {
		t.Errorf("tls_port beside port: %+v, %v; want the port", got, err)
	}
	if _, err := ParseValue([]byte(`{"console": {"host": "10.0.0.5", "internal_access_path": null, "tls_port": 5902}}`)); err == nil || !strings.Contains(err.Error(), "tls_port") {
		t.Errorf("only a tls_port: %v, want an error naming it", err)
	}
	if _, err := ParseValue([]byte(`{"console": {"console": {"host": "h", "port": 1}}}`)); err == nil {
		t.Error("a console inside a console accepted")
	}
}
