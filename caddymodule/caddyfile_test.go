package caddymodule

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
)

var updateAdapt = flag.Bool("update-adapt", false, "rewrite the expected JSON of testdata/caddyfile_adapt")

// TestCaddyfileAdapt: each testdata/caddyfile_adapt/*.caddyfiletest is a
// Caddyfile, a line of dashes, and the JSON it must adapt to.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt tests: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, found := strings.Cut(string(b), "----------")
			if *updateAdapt {
				writeAdaptExpectation(t, f, input)
				return
			}
			if !found {
				t.Fatalf("%s has no ---------- line", f)
			}
			caddytest.CompareAdapt(t, f, input, "caddyfile", strings.TrimSpace(expected))
		})
	}
}

func TestCaddyfileErrors(t *testing.T) {
	cases := []struct {
		name, input, want string
	}{
		{"no resolver", `vnc_proxy`, "needs a resolver"},
		{"empty block", "vnc_proxy {\n}", "needs a resolver"},
		{"argument", "vnc_proxy foo {\nresolver file /x\n}", "wrong argument count"},
		{"unknown option", "vnc_proxy {\nresolver file /x\nfrobnicate on\n}", `unrecognized vnc_proxy option "frobnicate"`},
		{"duplicated option", "vnc_proxy {\nresolver file /x\ndial_timeout 1s\ndial_timeout 2s\n}", "dial_timeout already specified"},
		{"duplicated resolver", "vnc_proxy {\nresolver file /x\nresolver file /y\n}", "resolver already specified"},
		{"resolver without source", "vnc_proxy {\nresolver\n}", "resolver needs a source"},
		{"unknown resolver", "vnc_proxy {\nresolver carrier-pigeon\n}", "carrier-pigeon"},
		{"bad duration", "vnc_proxy {\nresolver file /x\ndial_timeout soon\n}", `dial_timeout: invalid duration "soon"`},
		{"negative duration", "vnc_proxy {\nresolver file /x\nidle_timeout -1s\n}", "negative"},
		{"duration without value", "vnc_proxy {\nresolver file /x\nping_interval\n}", "wrong argument count"},
		{"bad size", "vnc_proxy {\nresolver file /x\nmax_message_size huge\n}", `max_message_size: invalid size "huge"`},
		{"zero size", "vnc_proxy {\nresolver file /x\nmax_message_size 0\n}", "invalid size"},
		{"clipboard argument", "vnc_proxy {\nresolver file /x\nclipboard off\n}", "wrong argument count"},
		{"clipboard neither on nor off", "vnc_proxy {\nresolver file /x\nclipboard {\ncopy no\n}\n}", `copy: "no" is neither on nor off`},
		{"clipboard unknown option", "vnc_proxy {\nresolver file /x\nclipboard {\ncut off\n}\n}", `unrecognized clipboard option "cut"`},
		{"clipboard duplicated option", "vnc_proxy {\nresolver file /x\nclipboard {\npaste off\npaste on\n}\n}", "clipboard: paste already specified"},
		{"clipboard bad size", "vnc_proxy {\nresolver file /x\nclipboard {\nmax_size lots\n}\n}", `clipboard max_size: invalid size "lots"`},
		{"bad check_rfb", "vnc_proxy {\nresolver file /x\ncheck_rfb maybe\n}", "check_rfb"},
		{"bad origin", "vnc_proxy {\nresolver file /x\nallowed_origins console.example.com\n}", "scheme://host"},
		{"origin with path", "vnc_proxy {\nresolver file /x\nallowed_origins https://a.example/path\n}", "more than scheme://host"},
		{"no origins", "vnc_proxy {\nresolver file /x\nallowed_origins\n}", "wrong argument count"},
		{"two tokens", "vnc_proxy {\nresolver file /x\ntoken {a} {b}\n}", "wrong argument count"},
		{"bad view_only", "vnc_proxy {\nresolver file /x\nview_only yes\n}", "view_only"},
		{"bad max_sessions", "vnc_proxy {\nresolver file /x\nmax_sessions many\n}", `max_sessions: "many" is not a non-negative number`},
		{"negative max_sessions_per_token", "vnc_proxy {\nresolver file /x\nmax_sessions_per_token -1\n}", "max_sessions_per_token"},
		{"bad end_at_expiry", "vnc_proxy {\nresolver file /x\nend_at_expiry sometimes\n}", "end_at_expiry"},
		{"bad max_session_duration", "vnc_proxy {\nresolver file /x\nmax_session_duration forever\n}", "max_session_duration"},
		{"vnc_auth argument", "vnc_proxy {\nresolver file /x\nvnc_auth x\n}", "wrong argument count"},
		{"vnc_auth unknown", "vnc_proxy {\nresolver file /x\nvnc_auth {\nkerberos\n}\n}", `unrecognized vnc_auth option "kerberos"`},
		{"vnc_auth twice", "vnc_proxy {\nresolver file /x\nvnc_auth {\npassword a\npassword b\n}\n}", "password already specified"},
		{"vnc_auth password without value", "vnc_proxy {\nresolver file /x\nvnc_auth {\npassword\n}\n}", "wrong argument count"},
		{"require_tls without tls", "vnc_proxy {\nresolver file /x\nvnc_auth {\nrequire_tls\n}\n}", "require_tls needs a tls block"},
		{"tls without ca", "vnc_proxy {\nresolver file /x\nvnc_auth {\ntls {\nserver_name h\n}\n}\n}", "ca is required"},
		{"tls cert without key", "vnc_proxy {\nresolver file /x\nvnc_auth {\ntls {\nca /c\ncert /x\n}\n}\n}", "cert and key go together"},
		{"unknown protocol", "vnc_proxy {\nresolver file /x\nprotocol rdp\n}", `protocol "rdp": want vnc, spice, serial or raw`},
		{"protocol without value", "vnc_proxy {\nresolver file /x\nprotocol\n}", "wrong argument count"},
		{"check_rfb off with protocol vnc", "vnc_proxy {\nresolver file /x\nprotocol vnc\ncheck_rfb off\n}", "check_rfb off contradicts protocol vnc"},
		{"check_rfb on with protocol serial", "vnc_proxy {\nresolver file /x\nprotocol serial\ncheck_rfb on\n}", "check_rfb on contradicts protocol serial"},
		{"vnc_auth with protocol serial", "vnc_proxy {\nresolver file /x\nprotocol serial\nvnc_auth {\npassword p\n}\n}", "vnc_auth needs protocol vnc, not serial"},
		{"view_only with protocol raw", "vnc_proxy {\nresolver file /x\nprotocol raw\nview_only on\n}", "view_only needs protocol vnc, not raw"},
		{"view_only with check_rfb off", "vnc_proxy {\nresolver file /x\ncheck_rfb off\nview_only on\n}", "view_only needs protocol vnc, not raw"},
		{"vnc_auth with protocol spice", "vnc_proxy {\nresolver file /x\nprotocol spice\nvnc_auth {\npassword p\n}\n}", "vnc_auth needs protocol vnc, not spice"},
		{"tls unknown", "vnc_proxy {\nresolver file /x\nvnc_auth {\ntls {\nca /c\npin x\n}\n}\n}", `unrecognized vnc_auth tls option "pin"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input))
			if err == nil {
				t.Fatalf("no error for %q", c.input)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestNativeCaddyfileErrors(t *testing.T) {
	const ok = "listen :5901\nserver_name vnc.test\nresolver file /x\n"
	cases := []struct {
		name, input, want string
	}{
		{"argument", "vnc_proxy foo {\n" + ok + "}", "wrong argument count"},
		{"no listen", "vnc_proxy {\nserver_name vnc.test\nresolver file /x\n}", "needs listen"},
		{"no server_name", "vnc_proxy {\nlisten :5901\nresolver file /x\n}", "needs server_name"},
		{"no resolver", "vnc_proxy {\nlisten :5901\nserver_name vnc.test\n}", "needs a resolver"},
		{"bad address", "vnc_proxy {\nlisten tcp/127.0.0.1:99999\nserver_name vnc.test\nresolver file /x\n}", "listen"},
		{"two names", "vnc_proxy {\n" + ok + "server_name a b\n}", "server_name already specified"},
		{"handler-only option", "vnc_proxy {\n" + ok + "ping_interval 1s\n}", `unrecognized vnc_proxy listener option "ping_interval"`},
		{"bad console option", "vnc_proxy {\n" + ok + "max_sessions many\n}", `max_sessions: "many" is not a non-negative number`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseNativeOption(caddyfile.NewTestDispenser(c.input), nil)
			if err == nil {
				t.Fatalf("no error for %q", c.input)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

// FuzzNativeOption feeds the vnc_proxy global option's reader any
// Caddyfile text: it answers with a listener or an error, never a panic,
// and a listener it returns has what the app requires.
func FuzzNativeOption(f *testing.F) {
	f.Add("vnc_proxy {\nlisten :5901\nserver_name vnc.test\nresolver file /x\n}")
	f.Add("vnc_proxy {\nlisten :5901 tcp/[::1]:5902-5903\nserver_name vnc.test\nresolver file /x\nview_only on\nmax_sessions 3\nvnc_auth {\npassword p\n}\n}")
	f.Add("vnc_proxy {\nlisten\n}")
	f.Add("vnc_proxy x {\n}")
	f.Fuzz(func(t *testing.T, input string) {
		v, err := parseNativeOption(caddyfile.NewTestDispenser(input), nil)
		if err != nil {
			return
		}
		app, ok := v.(httpcaddyfile.App)
		if !ok || app.Name != "vnc_proxy" {
			t.Fatalf("parsed into %#v", v)
		}
		var parsed NativeApp
		if err := json.Unmarshal(app.Value, &parsed); err != nil {
			t.Fatalf("the app's JSON does not read back: %v", err)
		}
		if len(parsed.Listeners) != 1 {
			t.Fatalf("%d listeners from one option", len(parsed.Listeners))
		}
		l := parsed.Listeners[0]
		if len(l.Listen) == 0 || l.ServerName == "" || l.ResolverRaw == nil {
			t.Fatalf("a listener without listen, server_name or resolver: %s", app.Value)
		}
		// A second option adds a listener to the first one's app.
		v2, err := parseNativeOption(caddyfile.NewTestDispenser(input), app)
		if err != nil {
			t.Fatalf("the same option a second time: %v", err)
		}
		if err := json.Unmarshal(v2.(httpcaddyfile.App).Value, &parsed); err != nil || len(parsed.Listeners) != 2 {
			t.Fatalf("two options: %d listeners, %v", len(parsed.Listeners), err)
		}
	})
}
