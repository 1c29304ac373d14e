package vncproxy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/vncgate/caddy-vnc-proxy"
	"github.com/vncgate/caddy-vnc-proxy/internal/buildmanifest"
)

// TestXcaddyManifest: the production build uses the Caddy that go.mod, and
// so every test, uses.
func TestXcaddyManifest(t *testing.T) {
	m, err := buildmanifest.Load("xcaddy.json")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	match := regexp.MustCompile(`(?m)^\s*github\.com/caddyserver/caddy/v2 (v\S+)`).FindSubmatch(gomod)
	if match == nil {
		t.Fatal("go.mod does not require github.com/caddyserver/caddy/v2")
	}
	if m.CaddyVersion != string(match[1]) {
		t.Errorf("xcaddy.json builds Caddy %s, go.mod requires %s", m.CaddyVersion, match[1])
	}
	// A version (v0.0.0), so that Go asks neither the module proxy nor the
	// repository host for the module, and the checkout as its source.
	if m.Plugins[0].Module != "github.com/vncgate/caddy-vnc-proxy@v0.0.0" || m.Plugins[0].Replacement != "./" {
		t.Errorf("the first plugin is %+v, want this module at v0.0.0 replaced by ./", m.Plugins[0])
	}
	args := strings.Join(m.XcaddyArgs(), " ")
	if want := "build " + m.CaddyVersion + " --with github.com/vncgate/caddy-vnc-proxy@v0.0.0=./"; !strings.HasPrefix(args, want) {
		t.Errorf("xcaddy %s, want it to start with %q", args, want)
	}
}

// TestCaddyfileExample: the documented production config adapts and
// validates (every module provisions) once its files exist.
func TestCaddyfileExample(t *testing.T) {
	b, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	tokens := filepath.Join(dir, "vnc-tokens")
	if err := os.WriteFile(tokens, []byte("abc: 127.0.0.1:5900\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cf := strings.NewReplacer(
		"/etc/caddy/vnc-tokens", tokens,
		"/var/log/caddy/", dir+"/",
		"/srv/vnc-console", dir,
	).Replace(string(b))

	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		t.Fatalf("adapting Caddyfile.example: %v", err)
	}
	for _, w := range warnings {
		t.Errorf("Caddyfile.example: %s", w)
	}
	for _, want := range []string{`"handler":"vnc_proxy"`, `"source":"file"`, `{"parameter":"token","type":"delete"}`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("adapted config lacks %s:\n%s", want, cfg)
		}
	}
	var c caddy.Config
	if err := caddy.StrictUnmarshalJSON(cfg, &c); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&c); err != nil {
		t.Fatalf("validating Caddyfile.example: %v", err)
	}
}
