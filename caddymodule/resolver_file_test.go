package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

func TestFileResolverCaddyfile(t *testing.T) {
	cases := []struct {
		input, want string
	}{
		{`file /etc/caddy/vnc-tokens`, `{"path":"/etc/caddy/vnc-tokens"}`},
		{`file {env.VNC_TOKENS}`, `{"path":"{env.VNC_TOKENS}"}`},
		{`file "/srv/vnc tokens/"`, `{"path":"/srv/vnc tokens/"}`},
	}
	for _, c := range cases {
		got, err := unmarshalResolver(t, c.input, new(FileResolver))
		if err != nil {
			t.Errorf("%s: %v", c.input, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.input, got, c.want)
		}
	}
}

func TestFileResolverCaddyfileErrors(t *testing.T) {
	cases := []struct {
		input, wantErr string
	}{
		{`file`, "expected exactly one path, got 0"},
		{`file a b`, "expected exactly one path, got 2"},
		{"file a {\n\tpath b\n}", `unknown option "path"`},
		{"file {\n\tpath b\n}", "expected exactly one path, got 0"},
	}
	for _, c := range cases {
		_, err := unmarshalResolver(t, c.input, new(FileResolver))
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%q: error %v, want %q", c.input, err, c.wantErr)
		}
	}
}

func TestFileResolverAdapt(t *testing.T) {
	got := adaptResolver(t, "vnc_proxy {\n\tresolver file /etc/caddy/vnc-tokens\n}")
	if want := `{"path":"/etc/caddy/vnc-tokens","source":"file"}`; got != want {
		t.Errorf("adapted resolver:\n got %s\nwant %s", got, want)
	}
}

// TestFileResolverLoad loads the module from JSON the way Caddy does,
// resolves through it, and checks that Cleanup stops the file's watcher.
func TestFileResolverLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vnc-tokens")
	if err := os.WriteFile(path, []byte("# consoles\nvm1: 10.0.0.5:5900\nvm2: unix_socket:/run/vm2.sock\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VNC_TOKENS_DIR", dir)

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	mod, err := ctx.LoadModuleByID("http.vnc_proxy.resolvers.file", json.RawMessage(`{"path": "{env.VNC_TOKENS_DIR}/vnc-tokens"}`))
	if err != nil {
		t.Fatalf("loading: %v", err)
	}
	r, ok := mod.(tokenresolver.Resolver)
	if !ok {
		t.Fatalf("module %T is not a tokenresolver.Resolver", mod)
	}
	q := tokenresolver.Query{Token: "vm2", ClientAddr: "127.0.0.1:1"}
	if got, err := r.Resolve(context.Background(), q); err != nil || got != (tokenresolver.Target{Network: "unix", Address: "/run/vm2.sock"}) {
		t.Errorf("Resolve(vm2) = %+v, %v", got, err)
	}
	if _, err := r.Resolve(context.Background(), tokenresolver.Query{Token: "vm3"}); !errors.Is(err, tokenresolver.ErrNotFound) {
		t.Errorf("Resolve(vm3): %v, want ErrNotFound", err)
	}

	// A change is picked up.
	tmp := filepath.Join(dir, ".vnc-tokens.new")
	if err := os.WriteFile(tmp, []byte("vm3: [::1]:5903\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := r.Resolve(context.Background(), tokenresolver.Query{Token: "vm3"})
		if err == nil && got.Address == "[::1]:5903" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reload not seen: Resolve(vm3) = %+v, %v", got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Cancelling the context is how Caddy cleans up an old config.
	fr := mod.(*FileResolver)
	cancel()
	if err := fr.file.Close(); err != nil { // closing twice is harmless
		t.Errorf("Close after Cleanup: %v", err)
	}
}

func TestFileResolverProvisionErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("ok: h:1\nsecret-token-9 h:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VNC_TOKENS_UNSET_FOR_TEST", "")
	cases := []struct {
		path, wantErr string
	}{
		{"", "path is required"},
		{"{env.VNC_TOKENS_UNSET_FOR_TEST}", "path is required"},
		{filepath.Join(dir, "missing"), "no such file or directory"},
	}
	for _, c := range cases {
		err := provision(t, &FileResolver{Path: c.path})
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("path %q: error %v, want %q", c.path, err, c.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "secret-token-9") {
			t.Errorf("path %q: error %q contains the token", c.path, err)
		}
	}
}

// TestFileResolverSkipsBadLines: a malformed line costs only its own
// token: the config loads, the other consoles open, and the log names file
// and line, never the token.
func TestFileResolverSkipsBadLines(t *testing.T) {
	addr, _ := startVNCDemo(t)
	dir := t.TempDir()
	tokens := writeTokenFile(t, dir, "ok: "+addr, "secret-token-9 "+addr, "also-ok: "+addr)
	tc := startCaddy(t, fileSite(tokens))
	for _, token := range []string{"ok", "also-ok"} {
		ws := mustDialWS(t, tc.url("/websockify?token="+token))
		ws.Close()
	}
	logs := tc.logs()
	if !strings.Contains(logs, `"token file lines skipped"`) || !strings.Contains(logs, tokens+`:2: missing \": \" between token and target`) {
		t.Errorf("no log line naming %s:2:\n%s", tokens, logs)
	}
	if strings.Contains(logs, "secret-token-9") {
		t.Error("the malformed line's token is in the log")
	}
}

func TestFileResolverNotProvisioned(t *testing.T) {
	_, err := new(FileResolver).Resolve(context.Background(), tokenresolver.Query{Token: "x"})
	if !errors.Is(err, tokenresolver.ErrUnavailable) {
		t.Errorf("Resolve before Provision: %v, want ErrUnavailable", err)
	}
}
