package caddymodule

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/nativeclient"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// Tokens of the native tests: long enough that finding one in a log
// means the token leaked.
const (
	nativeGood  = "tok-native-good-8c1f2e"
	nativeDown  = "tok-native-down-51a0b7"
	nativeWrong = "tok-native-wrong-77d3c4"
)

// nativeServerName is the listeners' certificate name: one that TigerVNC
// and Go's client resolve without help, and that Caddy's internal issuer
// signs.
const nativeServerName = "localhost"

// nativeCaddy is a Caddy in this process with native listeners, its
// certificates from its local CA (local_certs), and its admin endpoint on
// a free port.
type nativeCaddy struct {
	t       testing.TB
	dir     string
	admin   string
	logFile string
}

func startNativeCaddy(t testing.TB) *nativeCaddy {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	nc := &nativeCaddy{t: t, dir: dir, admin: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), logFile: filepath.Join(dir, "caddy.log")}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
	return nc
}

// load replaces the running config with one whose global options hold
// listeners (vnc_proxy blocks): a reload.
func (nc *nativeCaddy) load(listeners string) {
	nc.t.Helper()
	cf := fmt.Sprintf(`{
	admin %s
	skip_install_trust
	local_certs
	storage file_system %s/storage
	log {
		output file %s
		format json
		level DEBUG
	}
	%s
}
`, nc.admin, nc.dir, nc.logFile, listeners)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		nc.t.Fatalf("adapting Caddyfile: %v\n%s", err, cf)
	}
	if err := caddy.Load(cfg, true); err != nil {
		nc.t.Fatalf("loading config: %v\n%s", err, cfg)
	}
}

// roots is Caddy's local CA root, from its storage, as a viewer is given
// it.
func (nc *nativeCaddy) roots() *x509.CertPool {
	nc.t.Helper()
	path := filepath.Join(nc.dir, "storage", "pki", "authorities", "local", "root.crt")
	var pem []byte
	waitFor(nc.t, 20*time.Second, "Caddy's local CA root", func() bool {
		var err error
		pem, err = os.ReadFile(path)
		return err == nil
	})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		nc.t.Fatalf("%s holds no certificate", path)
	}
	return pool
}

// ready waits until the listener at addr serves its certificate, which
// Caddy obtains in the background.
func (nc *nativeCaddy) ready(addr string) {
	nc.t.Helper()
	roots := nc.roots()
	var err error
	waitFor(nc.t, 30*time.Second, "the listener's certificate", func() bool {
		err = nativeclient.ProbeTLS(addr, nativeclient.Options{ServerName: nativeServerName, RootCAs: roots})
		return err == nil
	})
}

func (nc *nativeCaddy) logs() string {
	b, _ := os.ReadFile(nc.logFile)
	return string(b)
}

// dial opens a console on the listener at addr with token.
func (nc *nativeCaddy) dial(addr, token string) (*nativeclient.Conn, error) {
	return nativeclient.Dial(addr, nativeclient.Options{Token: token, ServerName: nativeServerName, RootCAs: nc.roots()})
}

// adminSessions is the admin API's list of live consoles.
func (nc *nativeCaddy) adminSessions() []console.Info {
	nc.t.Helper()
	resp, err := http.Get("http://" + nc.admin + "/vnc_proxy/sessions")
	if err != nil {
		nc.t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []console.Info
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		nc.t.Fatal(err)
	}
	return list
}

// expectRefusal checks that a console on addr with token is refused with
// reason, as a failed SecurityResult.
func expectRefusal(t *testing.T, nc *nativeCaddy, addr, token, reason string) {
	t.Helper()
	c, err := nc.dial(addr, token)
	if err == nil {
		c.Close()
		t.Fatalf("token %s on %s: a console opened, want the refusal %q", token[:9], addr, reason)
	}
	if !errors.Is(err, rfb.ErrRefused) || !strings.HasSuffix(err.Error(), ": "+strconv.Quote(reason)) {
		t.Fatalf("refused with %v, want a failed SecurityResult %q", err, reason)
	}
}

// expectUpdate asks the console for an update and reads the start of it.
func expectUpdate(t *testing.T, c net.Conn) {
	t.Helper()
	if err := rfb.RequestUpdate(c, false, 0, 0, 16, 16); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var head [4]byte
	if _, err := io.ReadFull(c, head[:]); err != nil || head[0] != 0 {
		t.Fatalf("update %v, %v; want a FramebufferUpdate", head, err)
	}
	// The rectangles follow; the tests only need the relay to be alive,
	// so the rest is drained in the background.
	_ = c.SetReadDeadline(time.Time{})
}

// drain reads a console's stream until it ends, and reports when.
func drain(c net.Conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		done <- err
	}()
	return done
}

func expectEnded(t *testing.T, ended <-chan error, within time.Duration, what string) {
	t.Helper()
	select {
	case <-ended:
	case <-time.After(within):
		t.Fatalf("the viewer's connection still open %v after %s", within, what)
	}
}

// TestNativeListener: consoles for native viewers through the vnc_proxy
// app, against the demo VNC server: one opens and relays, each refusal is
// a failed SecurityResult with the browser's short reason, a view-only
// listener drops input, and the admin API lists a console as "native" and
// ends it by closing its connection.
func TestNativeListener(t *testing.T) {
	demo, _ := startVNCDemo(t)
	down := listenLoopback(t)
	downAddr := down.Addr().String()
	down.Close()
	nc := startNativeCaddy(t)
	tokens := writeTokenFile(t, nc.dir, nativeGood+": "+demo, nativeDown+": "+downAddr)
	ports := [4]string{}
	for i := range ports {
		ports[i] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	}
	listener := func(addr, options string) string {
		return fmt.Sprintf("vnc_proxy {\n\t\tlisten %s\n\t\tserver_name %s\n\t\tresolver file %s\n\t\t%s\n\t}\n\t", addr, nativeServerName, tokens, options)
	}
	limited, guarded, rated, viewOnly := ports[0], ports[1], ports[2], ports[3]
	nc.load(listener(limited, "max_sessions 1") +
		listener(guarded, "allow_targets 10.0.0.0/8") +
		listener(rated, "failed_token_rate 1/1m") +
		listener(viewOnly, "view_only on"))
	nc.ready(limited)

	c, err := nc.dial(limited, nativeGood)
	if err != nil {
		t.Fatalf("console: %v\n%s", err, nc.logs())
	}
	defer c.Close()
	if c.ServerInit.Width == 0 {
		t.Fatalf("ServerInit %+v", c.ServerInit)
	}
	expectUpdate(t, c)
	ended := drain(c)

	t.Run("refusals", func(t *testing.T) {
		expectRefusal(t, nc, limited, nativeGood, "too many consoles")
		expectRefusal(t, nc, guarded, nativeWrong, "invalid or expired token")
		expectRefusal(t, nc, guarded, nativeGood, "target not allowed")
		expectRefusal(t, nc, rated, nativeWrong, "invalid or expired token")
		expectRefusal(t, nc, rated, nativeWrong, "too many failed tokens")
		expectRefusal(t, nc, viewOnly, nativeDown, "VNC server unavailable")
	})

	// Every viewer gets the certificate of server_name: one that sends no
	// SNI, or an alias with no certificate of its own.
	t.Run("any SNI", func(t *testing.T) {
		for _, sni := range []string{"-", "vnc-alias.test"} {
			v, err := nativeclient.Dial(guarded, nativeclient.Options{Token: nativeWrong, ServerName: nativeServerName, RootCAs: nc.roots(), SNI: sni})
			if !errors.Is(err, rfb.ErrRefused) || !strings.HasSuffix(err.Error(), strconv.Quote("invalid or expired token")) {
				t.Fatalf("SNI %q: %v, want the TLS handshake to succeed and the token to be refused", sni, err)
			}
			if v != nil {
				v.Close()
			}
		}
	})

	t.Run("view-only", func(t *testing.T) {
		v, err := nc.dial(viewOnly, nativeGood)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		if err := rfb.KeyEvent(v, true, 'a'); err != nil {
			t.Fatal(err)
		}
		if err := rfb.PointerEvent(v, 1, 5, 5); err != nil {
			t.Fatal(err)
		}
		expectUpdate(t, v)
		var info console.Info
		for _, i := range nc.adminSessions() {
			if i.Server == "native/"+viewOnly {
				info = i
			}
		}
		// ClientInit and the update request; the key and the pointer
		// were dropped.
		if !info.ViewOnly || info.BytesToTarget != 1+10 || info.Transport != "native" {
			t.Fatalf("view-only console listed as %+v, want view_only and 11 bytes to the VNC server", info)
		}
	})

	t.Run("admin", func(t *testing.T) {
		var id string
		for _, i := range nc.adminSessions() {
			if i.Server == "native/"+limited {
				if i.Transport != "native" || i.Client == "" || i.TokenHash == "" {
					t.Errorf("listed as %+v", i)
				}
				id = i.ID
			}
		}
		if id == "" {
			t.Fatalf("the console is not listed: %+v", nc.adminSessions())
		}
		req, _ := http.NewRequest(http.MethodDelete, "http://"+nc.admin+"/vnc_proxy/sessions/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("DELETE: %d", resp.StatusCode)
		}
		expectEnded(t, ended, 3*time.Second, "the admin API ended the console")
		// Its place in max_sessions is free again once it has ended.
		waitFor(t, 5*time.Second, "a console after the end", func() bool {
			again, err := nc.dial(limited, nativeGood)
			if err == nil {
				again.Close()
			}
			return err == nil
		})
	})

	for _, tok := range []string{nativeGood, nativeDown, nativeWrong} {
		if strings.Contains(nc.logs(), tok) {
			t.Errorf("the log holds a token")
		}
	}
}

// TestNativeListenerReload: a reload that keeps a listener keeps its
// socket, its live console and every connection opened meanwhile; a
// reload that removes it closes the socket and ends its consoles.
func TestNativeListenerReload(t *testing.T) {
	demo, _ := startVNCDemo(t)
	nc := startNativeCaddy(t)
	tokens := writeTokenFile(t, nc.dir, nativeGood+": "+demo)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	listener := func(options string) string {
		return fmt.Sprintf("vnc_proxy {\n\t\tlisten %s\n\t\tserver_name %s\n\t\tresolver file %s\n\t\t%s\n\t}", addr, nativeServerName, tokens, options)
	}
	nc.load(listener("idle_timeout 1h"))
	nc.ready(addr)
	roots := nc.roots()

	live, err := nc.dial(addr, nativeGood)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	expectUpdate(t, live)

	// Viewers keep connecting while the config is replaced, each one
	// through its whole handshake.
	var opened, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := nativeclient.Dial(addr, nativeclient.Options{Token: nativeGood, ServerName: nativeServerName, RootCAs: roots})
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				opened.Add(1)
				c.Close()
			}
		})
	}
	for i := range 3 {
		nc.load(listener(fmt.Sprintf("idle_timeout %dh", 2+i)))
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failed.Load() > 0 || opened.Load() == 0 {
		t.Fatalf("during reloads %d consoles opened and %d failed (first: %v)", opened.Load(), failed.Load(), firstErr.Load())
	}
	// The console of the first config still relays.
	expectUpdate(t, live)
	ended := drain(live)

	// A config without the listener: its console ends, its socket closes.
	nc.load("")
	expectEnded(t, ended, 3*time.Second, "a reload removed the listener")
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the listener's socket still accepts after a reload removed it")
	}
}

// TestNativeListenerExit runs the real binary: SIGTERM ends a native
// console promptly (its connection closes) and the process exits.
func TestNativeListenerExit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	demo, _ := startVNCDemo(t)
	dir := t.TempDir()
	tokens := writeTokenFile(t, dir, nativeGood+": "+demo)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	global := fmt.Sprintf("vnc_proxy {\n\t\tlisten %s\n\t\tserver_name %s\n\t\tresolver file %s\n\t}", addr, nativeServerName, tokens)
	_, proc := startCaddyProcessWith(t, dir, caddyProcess{https: true, global: global}, "respond ok")
	nc := &nativeCaddy{t: t, dir: dir}
	nc.ready(addr)

	c, err := nc.dial(addr, nativeGood)
	if err != nil {
		t.Fatalf("%v\n%s", err, proc.Output())
	}
	defer c.Close()
	expectUpdate(t, c)
	ended := drain(c)
	if err := proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expectEnded(t, ended, 3*time.Second, "SIGTERM")
	select {
	case <-proc.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("caddy did not exit after SIGTERM\n%s", proc.Output())
	}
}

// TestNativeListenerVNCViewer: TigerVNC's vncviewer, under Xvfb, through
// the listener to the demo VNC server, given Caddy's local CA root
// (-X509CA) and the token in VNC_PASSWORD: the screen shows the demo's
// picture; a wrong token ends the viewer with the proxy's reason.
func TestNativeListenerVNCViewer(t *testing.T) {
	testenv.Require(t, "vncviewer", "tigervnc-viewer")
	testenv.Require(t, "Xvfb", "xvfb")
	testenv.Require(t, "import", "imagemagick")
	demo, _ := startVNCDemo(t)
	nc := startNativeCaddy(t)
	tokens := writeTokenFile(t, nc.dir, nativeGood+": "+demo)
	port := testenv.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	nc.load(fmt.Sprintf("vnc_proxy {\n\t\tlisten %s\n\t\tserver_name %s\n\t\tresolver file %s\n\t}", addr, nativeServerName, tokens))
	nc.ready(addr)
	root := filepath.Join(nc.dir, "storage", "pki", "authorities", "local", "root.crt")
	display := testenv.StartXvfb(t, 1024, 768)
	// By the certificate's name, as the README says: an IP address would
	// open vncviewer's name-mismatch dialog.
	server := fmt.Sprintf("%s::%d", nativeServerName, port)

	t.Run("token", func(t *testing.T) {
		p := testenv.VNCViewer{Display: display, CA: root, Username: "anyone", Password: nativeGood}.Start(t, server)
		img, ok := testenv.WaitScreen(t, display, 30*time.Second, testenv.VNCDemoOnScreen)
		path := filepath.Join(t.ArtifactDir(), "screen.png")
		testenv.SavePNG(t, path, img)
		if !ok {
			t.Fatalf("no vncdemo picture on the screen after 30s (screenshot %s)\n%s\n%s", path, p.Output(), nc.logs())
		}
		var listed bool
		for _, i := range nc.adminSessions() {
			listed = listed || i.Transport == "native"
		}
		if !listed {
			t.Error("the viewer's console is not listed as native")
		}
		p.Stop()
	})

	t.Run("wrong token", func(t *testing.T) {
		p := testenv.VNCViewer{Display: display, CA: root, Username: "anyone", Password: nativeWrong}.Start(t, server)
		select {
		case <-p.Done():
		case <-time.After(30 * time.Second):
			t.Fatalf("the viewer still runs 30s after a refusal:\n%s", p.Output())
		}
		if want := "Authentication failure: invalid or expired token"; !strings.Contains(p.Output(), want) {
			t.Fatalf("the viewer's log lacks %q:\n%s", want, p.Output())
		}
	})
}

// TestNativeListenerQEMU: a native console to QEMU's VNC server, which
// asks for a VNC password: the proxy logs in with vnc_auth's, and the
// viewer, which knows only its token, gets the SeaBIOS screen's updates.
func TestNativeListenerQEMU(t *testing.T) {
	const vncPassword = "qemu-pw-3f9a"
	qemu := testenv.StartQEMU(t, testenv.QEMU{Password: vncPassword})
	nc := startNativeCaddy(t)
	tokens := writeTokenFile(t, nc.dir, nativeGood+": "+qemu)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	t.Setenv("NATIVE_TEST_VNC_PASSWORD", vncPassword)
	nc.load(fmt.Sprintf("vnc_proxy {\n\t\tlisten %s\n\t\tserver_name %s\n\t\tresolver file %s\n\t\tvnc_auth {\n\t\t\tpassword {env.NATIVE_TEST_VNC_PASSWORD}\n\t\t}\n\t}", addr, nativeServerName, tokens))
	nc.ready(addr)

	c, err := nc.dial(addr, nativeGood)
	if err != nil {
		t.Fatalf("%v\n%s", err, nc.logs())
	}
	defer c.Close()
	if c.ServerInit.Width < 320 || c.ServerInit.Height < 200 {
		t.Fatalf("ServerInit %+v, want QEMU's screen", c.ServerInit)
	}
	if err := rfb.SetPixelFormat32(c); err != nil {
		t.Fatal(err)
	}
	if err := rfb.SetEncodings(c, 0); err != nil {
		t.Fatal(err)
	}
	if err := rfb.RequestUpdate(c, false, 0, 0, uint16(c.ServerInit.Width), uint16(c.ServerInit.Height)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	rects, err := rfb.ReadFramebufferUpdate(c, rfb.PixelFormat32)
	if err != nil || len(rects) == 0 {
		t.Fatalf("update: %d rectangles, %v", len(rects), err)
	}
	if logs := nc.logs(); strings.Contains(logs, vncPassword) || strings.Contains(logs, nativeGood) {
		t.Error("the log holds the VNC password or the token")
	}
}
