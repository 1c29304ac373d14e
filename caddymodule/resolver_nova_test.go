package caddymodule

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/spice"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

// keystoneAndNova is a stand-in for Keystone v3 and nova's compute API,
// following their API references: POST /v3/auth/tokens answers 201 with
// X-Subject-Token and token.expires_at for the right application
// credential; GET /v2.1/os-console-auth-tokens/{token} needs that token and
// microversion 2.31, and answers {"console": {...}} or 404.
type keystoneAndNova struct {
	consoles map[string]string
	logins   atomic.Int32
	lookups  atomic.Int32
}

func (s *keystoneAndNova) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v3/auth/tokens":
		var req struct {
			Auth struct {
				Identity struct {
					Methods               []string `json:"methods"`
					ApplicationCredential struct {
						ID     string `json:"id"`
						Secret string `json:"secret"`
					} `json:"application_credential"`
				} `json:"identity"`
			} `json:"auth"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		ac := req.Auth.Identity.ApplicationCredential
		if ac.ID != "ac-id-1" || ac.Secret != "ac-secret-2f9e" {
			http.Error(w, `{"error": {"code": 401}}`, http.StatusUnauthorized)
			return
		}
		s.logins.Add(1)
		w.Header().Set("X-Subject-Token", "gAAAAAB-ks-token")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"token": {"expires_at": %q}}`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano))
	case strings.HasPrefix(r.URL.Path, "/v2.1/os-console-auth-tokens/"):
		if r.Header.Get("X-Auth-Token") != "gAAAAAB-ks-token" {
			http.Error(w, `{"error": {"code": 401}}`, http.StatusUnauthorized)
			return
		}
		if r.Header.Get("OpenStack-API-Version") != "compute 2.31" {
			http.Error(w, `{"badRequest": {"code": 400}}`, http.StatusBadRequest)
			return
		}
		s.lookups.Add(1)
		c, ok := s.consoles[strings.TrimPrefix(r.URL.Path, "/v2.1/os-console-auth-tokens/")]
		if !ok {
			http.Error(w, `{"itemNotFound": {"code": 404}}`, http.StatusNotFound)
			return
		}
		fmt.Fprintf(w, `{"console": %s}`, c)
	default:
		http.NotFound(w, r)
	}
}

// novaSite is the README's nova Caddyfile, less TLS: nova's console URLs
// open the page at /vnc_lite.html?path=%3Ftoken%3D<token>, whose WebSocket
// is /?token=<token>; the upgrade goes to vnc_proxy by a matcher.
func novaSite(dir, api string) string {
	return novaAccessLog(dir) + fmt.Sprintf(`
	@console {
		header Connection *Upgrade*
		header Upgrade websocket
	}
	handle @console {
		vnc_proxy {
			resolver nova %[1]s/v2.1 {
				keystone %[1]s/v3
				application_credential {env.NOVA_APP_CRED_ID} {env.NOVA_APP_CRED_SECRET}
			}
		}
	}
	handle {
		respond "the noVNC page"
	}`, api)
}

// novaAccessLog is the README's nova access log: to dir/access.log, without
// the token (nor noVNC's path, which holds it) or the Referer.
func novaAccessLog(dir string) string {
	return fmt.Sprintf(`log {
		output file %s/access.log
		format filter {
			request>uri query {
				delete token
				delete path
			}
			request>headers>Referer delete
		}
	}`, dir)
}

// checkNovaPage fails the test unless url answers want: the console page
// nova links users to.
func checkNovaPage(t *testing.T, url, want string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != want {
		t.Errorf("the page: %s %q", resp.Status, body)
	}
}

// checkNovaLogs fails the test if Caddy's log or access log in dir holds
// the console token, the credential's secret or the Keystone token.
func checkNovaLogs(t *testing.T, dir, consoleToken string) string {
	t.Helper()
	time.Sleep(200 * time.Millisecond) // the access log's last lines
	logs := ""
	for _, f := range []string{"caddy.log", "access.log"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		logs += string(b)
	}
	for _, secret := range []string{consoleToken, "ac-secret-2f9e", "gAAAAAB-ks-token"} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret (%.6s...) is in Caddy's logs", secret)
		}
	}
	return logs
}

// startNovaSite starts the Keystone and nova stand-in, with consoleToken
// for a console at target (host:port), and the real binary with the site
// siteFor(dir, the stand-in's URL) makes; it returns the site's address,
// Caddy's folder and the stand-in.
func startNovaSite(t *testing.T, consoleToken, target string, siteFor func(dir, api string) string) (string, string, *keystoneAndNova) {
	t.Helper()
	host, port, _ := net.SplitHostPort(target)
	api := &keystoneAndNova{consoles: map[string]string{
		consoleToken: fmt.Sprintf(`{"instance_uuid": "0b5c2a1e-0000-4000-8000-000000000001", "host": %q, "port": %s, "internal_access_path": null}`, host, port),
	}}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	t.Setenv("NOVA_APP_CRED_ID", "ac-id-1")
	t.Setenv("NOVA_APP_CRED_SECRET", "ac-secret-2f9e")
	dir := t.TempDir()
	site, _ := startCaddyProcess(t, dir, siteFor(dir, srv.URL))
	return site, dir, api
}

// TestNovaThroughCaddy: nova's URL shape, through the real binary and the
// nova resolver, to a real VNC server.
func TestNovaThroughCaddy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	vnc, _ := startVNCDemo(t)
	const consoleToken = "7f3c9e2a-5b1d-4e8f-a6c2-1d9b8e7f6a5c"
	site, dir, api := startNovaSite(t, consoleToken, vnc, novaSite)

	// The page nova links to is served at /vnc_lite.html?path=...
	checkNovaPage(t, "http://"+site+"/vnc_lite.html?path=%3Ftoken%3D"+consoleToken, "the noVNC page")
	// Its WebSocket at /?token=<token> reaches the VNC server.
	stream, si := rfbThroughProxy(t, "ws://"+site+"/?token="+consoleToken)
	if si.Width != 800 || si.Height != 600 {
		t.Fatalf("ServerInit %+v", si)
	}
	if rects := firstFrame(t, stream, si); len(rects) == 0 {
		t.Fatal("no picture")
	}
	stream.Conn.Close()
	for range 3 {
		ws, _, _ := dialWS(t, "ws://"+site+"/?token="+consoleToken, nil)
		if ws != nil {
			ws.Close()
		}
	}
	if n := api.logins.Load(); n != 1 {
		t.Errorf("%d Keystone logins for 4 consoles, want 1", n)
	}
	_, status, body2 := dialWS(t, "ws://"+site+"/?token=00000000-dead-beef-0000-000000000000", nil)
	if status != http.StatusForbidden {
		t.Errorf("an unknown token: %d %q, want 403", status, body2)
	}

	if logs := checkNovaLogs(t, dir, consoleToken); !strings.Contains(logs, `"session started"`) {
		t.Errorf("no session in the log:\n%s", logs)
	}
}

func TestNovaCaddyfile(t *testing.T) {
	var r NovaResolver
	d := caddyfile.NewTestDispenser(`nova https://nova.internal:8774/v2.1 {
		keystone https://keystone.internal:5000/v3
		application_credential {env.ID} {env.SECRET}
		ca /etc/ssl/private-cloud.pem
		timeout 3s
	}`)
	if err := r.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if r.ComputeURL != "https://nova.internal:8774/v2.1" || r.Keystone != "https://keystone.internal:5000/v3" ||
		r.ApplicationCredentialID != "{env.ID}" || r.ApplicationCredentialSecret != "{env.SECRET}" ||
		r.CA != "/etc/ssl/private-cloud.pem" || time.Duration(r.Timeout) != 3*time.Second {
		t.Errorf("parsed %+v", r)
	}
	for _, bad := range []string{
		"nova",
		"nova https://n/v2.1",
		"nova https://n/v2.1 {\nkeystone https://k/v3\napplication_credential only-id\n}",
		"nova https://n/v2.1 {\nkeystone https://k/v3\nregion RegionOne\n}",
		"nova https://n/v2.1 {\nkeystone https://k/v3\nkeystone https://k2/v3\n}",
	} {
		var r NovaResolver
		if err := r.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestNovaPrivateCA: with ca, the resolver trusts a private cloud's
// endpoints; without it, their certificates are refused (503).
func TestNovaPrivateCA(t *testing.T) {
	api := &keystoneAndNova{consoles: map[string]string{
		"tok": `{"instance_uuid": "x", "host": "10.0.0.5", "port": 5901, "internal_access_path": null}`,
	}}
	srv := httptest.NewTLSServer(api)
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ca string
		ok bool
	}{{caFile, true}, {"", false}} {
		r := &NovaResolver{ComputeURL: srv.URL + "/v2.1", Keystone: srv.URL + "/v3",
			ApplicationCredentialID: "ac-id-1", ApplicationCredentialSecret: "ac-secret-2f9e", CA: c.ca}
		if err := provision(t, r); err != nil {
			t.Fatal(err)
		}
		got, err := r.Resolve(context.Background(), tokenresolver.Query{Token: "tok"})
		if c.ok && (err != nil || got.Address != "10.0.0.5:5901") {
			t.Errorf("with ca: %+v, %v", got, err)
		}
		if !c.ok && !errors.Is(err, tokenresolver.ErrUnavailable) {
			t.Errorf("without ca: %v, want ErrUnavailable", err)
		}
	}
}

// novaSerialSite is the README's nova-serialproxy Caddyfile, less TLS:
// vnc_proxy serves the whole site, so nova's serial URL,
// <[serial_console] base_url>?token=<token>, is /?token=<token>.
func novaSerialSite(dir, api string) string {
	return novaAccessLog(dir) + fmt.Sprintf(`
	vnc_proxy {
		resolver nova %[1]s/v2.1 {
			keystone %[1]s/v3
			application_credential {env.NOVA_APP_CRED_ID} {env.NOVA_APP_CRED_SECRET}
		}
		protocol serial
		allowed_origins https://dashboard.example.com
		allow_targets 127.0.0.1
	}`, api)
}

// TestNovaSerialThroughCaddy: nova-serialproxy's URL shape, through the
// real binary and the nova resolver (nova answers for a serial token as
// for a novnc one), to a real Linux guest's serial console, typed into as
// Horizon's serial page does: subprotocols "binary, base64", keystrokes as
// text messages, from the dashboard's origin.
func TestNovaSerialThroughCaddy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy and boots a guest")
	}
	guest := testenv.StartSerialGuest(t)
	const consoleToken = "3e9d1c7b-8a2f-4c6e-b5d4-2f1a0e9c8b7d"
	site, dir, _ := startNovaSite(t, consoleToken, guest, novaSerialSite)

	header := http.Header{"Sec-WebSocket-Protocol": {"binary, base64"}, "Origin": {"https://dashboard.example.com"}}
	ws, status, body := dialWS(t, "ws://"+site+"/?token="+consoleToken, header)
	if ws == nil {
		t.Fatalf("nova's serial URL: %d %q", status, body)
	}
	if ws.Subprotocol() != "binary" {
		t.Errorf("subprotocol %q, want binary", ws.Subprotocol())
	}
	conn := serialOverWS(t, ws)
	conn.sendText()
	testenv.WaitForSerialShell(t, conn, 3*time.Minute)
	runInGuest(t, conn, "echo nova-$((6*7))", "nova-42")

	// The port serves one console: a second is refused 409.
	if ws2, status, _ := dialWS(t, "ws://"+site+"/?token="+consoleToken, nil); ws2 != nil || status != http.StatusConflict {
		t.Errorf("a second console: %d, want 409", status)
	}
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	ws.Close()

	if ws3, status, _ := dialWS(t, "ws://"+site+"/?token="+consoleToken, http.Header{"Origin": {"https://elsewhere.example.com"}}); ws3 != nil || status != http.StatusForbidden {
		t.Errorf("another origin: %d, want 403", status)
	}
	checkNovaLogs(t, dir, consoleToken)
}

// novaSPICESite is the README's nova-spicehtml5proxy Caddyfile, less TLS:
// spice_auto.html?token=<token> is served at /, and its WebSockets, one per
// SPICE channel, come to /websockify with the token in a cookie.
func novaSPICESite(dir, api string) string {
	return novaAccessLog(dir) + fmt.Sprintf(`
	handle /websockify {
		vnc_proxy {
			resolver nova %[1]s/v2.1 {
				keystone %[1]s/v3
				application_credential {env.NOVA_APP_CRED_ID} {env.NOVA_APP_CRED_SECRET}
			}
			protocol spice
			allow_targets 127.0.0.1
		}
	}
	handle {
		respond "the spice-html5 page"
	}`, api)
}

// TestNovaSPICEThroughCaddy: nova-spicehtml5proxy's shape, through the real
// binary and the nova resolver (nova answers for a spice-html5 token as for
// a novnc one), to QEMU's SPICE server: four channels with the token in
// spice_auto.html's cookie are one console, for which nova is asked once.
func TestNovaSPICEThroughCaddy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	addr := testenv.StartQEMUSpice(t, testenv.QEMUSpice{})
	const consoleToken = "c4a1f0e2-6b3d-4f5a-8e7c-9d2b1a0f3e4c"
	site, dir, api := startNovaSite(t, consoleToken, addr, novaSPICESite)

	// The page nova links to.
	checkNovaPage(t, "http://"+site+"/spice_auto.html?token="+consoleToken, "the spice-html5 page")

	url := "ws://" + site + "/websockify"
	cookie := http.Header{"Cookie": {"token=" + consoleToken}}
	mainWS, main := spiceChannelWith(t, url, cookie, spice.ChannelMain, 0, false)
	defer mainWS.Close()
	displayWS, display := spiceChannelWith(t, url, cookie, spice.ChannelDisplay, main.SessionID, false)
	defer displayWS.Close()
	if _, err := display.WaitFor(spice.MsgDisplayDrawCopy, 10000); err != nil {
		t.Fatalf("display channel: no picture: %v", err)
	}
	for _, typ := range []spice.ChannelType{spice.ChannelInputs, spice.ChannelCursor} {
		ws, _ := spiceChannelWith(t, url, cookie, typ, main.SessionID, false)
		defer ws.Close()
	}
	if n := api.lookups.Load(); n != 1 {
		t.Errorf("%d nova lookups for one four-channel console, want 1", n)
	}

	// Without the cookie there is no token.
	if ws, status, _ := dialWS(t, url, nil); ws != nil || status != http.StatusUnauthorized {
		t.Errorf("no cookie: %d, want 401", status)
	}
	checkNovaLogs(t, dir, consoleToken)
}
