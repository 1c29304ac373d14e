package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/internal/vncdemo"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
)

const vncPassword = "vnc-pw-7d1f"

// recordServer is an HTTP callback resolver's service: it answers every
// token with the JSON record, so tests can give a token a password or
// view_only.
func recordServer(t *testing.T, record map[string]any) string {
	t.Helper()
	body, err := json.Marshal(record)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/consoles/{token}"
}

func callbackSite(url string, options ...string) string {
	return fmt.Sprintf("route /websockify {\n\t\tvnc_proxy {\n\t\t\tresolver http %s\n\t\t\t%s\n\t\t}\n\t}",
		url, strings.Join(options, "\n\t\t\t"))
}

// tlsBlock is vnc_auth's tls block for a test PKI.
func tlsBlock(p *testenv.PKI, extra ...string) string {
	return fmt.Sprintf("tls {\n\t\t\t\tca %s\n\t\t\t\tcert %s\n\t\t\t\tkey %s\n\t\t\t\t%s\n\t\t\t}",
		p.CA, p.ClientCert, p.ClientKey, strings.Join(extra, "\n\t\t\t\t"))
}

// checkNoSecret fails if a secret appears in what Caddy logged.
func checkNoSecret(t *testing.T, tc *testCaddy, secrets ...string) {
	t.Helper()
	logs := tc.logs()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a secret (%.3s...) is in Caddy's logs", s)
		}
	}
}

// TestRFBAwareConsoles: the browser offers no password and gets security
// None; the proxy logs in to each kind of VNC server and the picture comes
// through.
func TestRFBAwareConsoles(t *testing.T) {
	pki := testenv.NewPKI(t)
	cases := []struct {
		name     string
		site     func(t *testing.T) string
		security string
	}{
		{"vncdemo, VNC password from vnc_auth", func(t *testing.T) string {
			addr := startVNCDemoWith(t, &vncdemo.Server{Password: vncPassword})
			return fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr),
				"vnc_auth {\n\t\t\t\tpassword "+vncPassword+"\n\t\t\t}")
		}, "vnc"},
		{"QEMU, VNC password from the token's record", func(t *testing.T) string {
			addr := testenv.StartQEMU(t, testenv.QEMU{Password: vncPassword})
			return callbackSite(recordServer(t, map[string]any{"host": addr, "password": vncPassword}))
		}, "vnc"},
		{"QEMU, VeNCrypt X509None with a client certificate", func(t *testing.T) string {
			addr := testenv.StartQEMU(t, testenv.QEMU{TLS: pki})
			return fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr),
				"vnc_auth {\n\t\t\t"+tlsBlock(pki)+"\n\t\t\trequire_tls\n\t\t}")
		}, "vencrypt x509none"},
		{"QEMU, VeNCrypt X509Vnc, server name checked", func(t *testing.T) string {
			addr := testenv.StartQEMU(t, testenv.QEMU{TLS: pki, Password: vncPassword})
			return callbackSite(recordServer(t, map[string]any{"host": addr, "password": vncPassword}),
				"vnc_auth {\n\t\t\t"+tlsBlock(pki, "server_name localhost")+"\n\t\t}")
		}, "vencrypt x509vnc"},
		{"Xvnc offering X509None, X509Vnc and VncAuth", func(t *testing.T) string {
			addr := testenv.StartXvnc(t, "-SecurityTypes", "X509None,X509Vnc,VncAuth",
				"-X509Cert", pki.ServerCert, "-X509Key", pki.ServerKey, "-PasswordFile", testenv.VNCPasswordFile(t, vncPassword))
			return fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr),
				"vnc_auth {\n\t\t\tpassword "+vncPassword+"\n\t\t\t"+tlsBlock(pki)+"\n\t\t}")
		}, "vencrypt x509vnc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tc := startCaddy(t, c.site(t))
			stream, si := rfbThroughProxy(t, tc.url("/websockify?token="+secretToken))
			if si.Security != rfb.SecurityNone || si.Minor != 8 {
				t.Errorf("the browser got security %d over 3.%d, want None over 3.8", si.Security, si.Minor)
			}
			if si.Width == 0 || si.Height == 0 {
				t.Fatalf("framebuffer %dx%d", si.Width, si.Height)
			}
			if rects := firstFrame(t, stream, si); len(rects) == 0 {
				t.Fatal("empty first framebuffer update")
			}
			stream.Conn.Close()
			waitFor(t, 5*time.Second, "the session's end", func() bool { return strings.Contains(tc.logs(), `"session ended"`) })
			logs := tc.logs()
			if !strings.Contains(logs, `"vnc_security":"`+c.security+`"`) {
				t.Errorf("session started line does not say vnc_security %q:\n%s", c.security, logs)
			}
			checkNoSecret(t, tc, vncPassword, secretToken)
		})
	}
}

// TestRFBAwareBrowserVersions: a browser answering 3.3 or 3.7 is served.
func TestRFBAwareBrowserVersions(t *testing.T) {
	addr := startVNCDemoWith(t, &vncdemo.Server{Password: vncPassword})
	tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr),
		"vnc_auth {\n\t\t\t\tpassword "+vncPassword+"\n\t\t\t}"))
	for _, minor := range []int{3, 7} {
		t.Run(fmt.Sprintf("3.%d", minor), func(t *testing.T) {
			ws := mustDialWS(t, tc.url("/websockify?token="+secretToken))
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			stream := wsstream.New(ws)
			si, err := rfb.ClientHandshakeVersion(stream, "", minor)
			if err != nil {
				t.Fatal(err)
			}
			if si.Minor != minor || si.Security != rfb.SecurityNone || si.Width != 800 {
				t.Fatalf("ServerInit %+v", si)
			}
			if rects := firstFrame(t, stream, si); len(rects) == 0 {
				t.Fatal("empty first framebuffer update")
			}
		})
	}
}

// TestRFBAwareRefusals: a VNC server the proxy cannot log in to is a 502
// with the usual body, the reason in the log, and the password nowhere.
func TestRFBAwareRefusals(t *testing.T) {
	pki := testenv.NewPKI(t)
	other := testenv.NewPKI(t)
	qemuPassword := testenv.StartQEMU(t, testenv.QEMU{Password: vncPassword})
	qemuTLS := testenv.StartQEMU(t, testenv.QEMU{TLS: pki, Password: vncPassword})
	anonymous := scriptedVNCServer(t, "RFB 003.008\n\x01\x13", "\x00\x02", "\x00\x02\x00\x00\x01\x01\x00\x00\x01\x02")
	hugeReason := scriptedVNCServer(t, "RFB 003.008\n\x00\xff\xff\xff\xff")
	noTypes := scriptedVNCServer(t, "RFB 003.008\n\x00\x00\x00\x00\x00")
	cases := []struct {
		name   string
		target string
		auth   string
		log    string
	}{
		{"wrong password", qemuPassword, "password wrong-pw-1", "vnc server refused the login"},
		{"require_tls against a server without TLS", qemuPassword, "password " + vncPassword + "\n" + tlsBlock(pki) + "\nrequire_tls", "require_tls is set"},
		{"wrong CA", qemuTLS, "password " + vncPassword + "\n" + tlsBlock(other), "certificate signed by unknown authority"},
		{"server name mismatch", qemuTLS, "password " + vncPassword + "\n" + tlsBlock(pki, "server_name compute-9.example"), "compute-9.example"},
		{"missing client certificate", qemuTLS, fmt.Sprintf("password %s\ntls {\nca %s\n}", vncPassword, pki.CA), "the VNC server"},
		{"only anonymous TLS", anonymous, "password " + vncPassword + "\n" + tlsBlock(pki), "anonymous TLS"},
		{"a reason of 4 GiB", hugeReason, "password " + vncPassword, "4294967295 bytes, not read"},
		{"zero security types", noTypes, "password " + vncPassword, "connection refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+c.target),
				"vnc_auth {\n"+c.auth+"\n}"))
			start := time.Now()
			ws, status, body := dialWS(t, tc.url("/websockify?token="+secretToken), nil)
			if ws != nil {
				// A refused client certificate may show only after the
				// TLS 1.3 handshake: then the login fails at once.
				t.Fatalf("upgraded, want 502")
			}
			if status != http.StatusBadGateway || body != "VNC server unavailable\n" {
				t.Errorf("status %d body %q, want 502 %q", status, body, "VNC server unavailable\n")
			}
			if d := time.Since(start); d > 4*time.Second {
				t.Errorf("the refusal took %v", d)
			}
			logs := tc.logs()
			if !strings.Contains(logs, "logging in to the VNC server") || !strings.Contains(logs, c.log) {
				t.Errorf("log does not say %q:\n%s", c.log, logs)
			}
			checkNoSecret(t, tc, vncPassword, "wrong-pw-1", secretToken)
		})
	}
}

// TestViewOnly: keys and clicks from a view-only console do not reach
// vncdemo, whose picture still updates; the same input from an ordinary
// console does, so the test can tell.
func TestViewOnly(t *testing.T) {
	for _, c := range []struct {
		name     string
		site     func(addr string) string
		viewOnly bool
	}{
		{"ordinary console", func(addr string) string {
			return fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr))
		}, false},
		{"view_only on", func(addr string) string {
			return fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr), "view_only on")
		}, true},
		{"the token's view_only", func(addr string) string {
			return callbackSite(recordServer(t, map[string]any{"host": addr, "view_only": true}))
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, _ := startVNCDemo(t)
			tc := startCaddy(t, c.site(addr))
			stream, si := rfbThroughProxy(t, tc.url("/websockify?token="+secretToken))
			fb := rfb.NewFramebuffer(si.Width, si.Height)
			fb.Apply(firstFrame(t, stream, si))
			clockBefore := clockPixels(fb)

			// Type, click, paste, as noVNC would, then wait for the clock
			// to change: the picture still updates.
			for _, err := range []error{
				rfb.KeyEvent(stream, true, 'a'), rfb.KeyEvent(stream, false, 'a'),
				rfb.PointerEvent(stream, 1, 400, 100), rfb.PointerEvent(stream, 0, 400, 100),
				rfb.ClientCutText(stream, []byte("rm -rf /")),
			} {
				if err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(5 * time.Second)
			for clockPixels(fb) == clockBefore {
				if time.Now().After(deadline) {
					t.Fatal("the clock did not change in 5s: the picture does not update")
				}
				if err := rfb.RequestUpdate(stream, false, 0, 0, uint16(si.Width), uint16(si.Height)); err != nil {
					t.Fatal(err)
				}
				rects, err := rfb.ReadFramebufferUpdate(stream, rfb.PixelFormat32)
				if err != nil {
					t.Fatal(err)
				}
				fb.Apply(rects)
			}
			keyLit := pixelIs(fb, 60, 10, 255, 255, 0)
			dot := pixelIs(fb, 400, 100, 255, 0, 255)
			if c.viewOnly && (keyLit || dot) {
				t.Errorf("view-only input reached the server: key indicator lit %v, click dot %v", keyLit, dot)
			}
			if !c.viewOnly && (!keyLit || !dot) {
				t.Errorf("ordinary input did not reach the server: key indicator lit %v, click dot %v", keyLit, dot)
			}
			stream.Conn.Close()
			waitFor(t, 5*time.Second, "the session's end", func() bool { return strings.Contains(tc.logs(), `"session ended"`) })
			if c.viewOnly && !strings.Contains(tc.logs(), `"dropped_input":5`) {
				t.Errorf("the session ended line does not count 5 dropped messages:\n%s", tc.logs())
			}
		})
	}
}

// TestViewOnlyDoesNotDisconnectOthers: Xvnc disconnects its other clients
// when one asks for exclusive access (ClientInit's shared flag off); a
// view-only console's request is made shared.
func TestViewOnlyDoesNotDisconnectOthers(t *testing.T) {
	addr := testenv.StartXvnc(t)
	for _, c := range []struct {
		name       string
		option     string
		keepsOther bool
	}{
		{"ordinary console asking for exclusive access", "", false},
		{"view-only console asking for exclusive access", "view_only on", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr), c.option))
			first, si := rfbThroughProxy(t, tc.url("/websockify?token="+secretToken))

			ws := mustDialWS(t, tc.url("/websockify?token="+secretToken))
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			second := wsstream.New(ws)
			if _, err := rfb.ClientHandshakeWith(second, rfb.HandshakeOptions{Exclusive: true}); err != nil {
				t.Fatal(err)
			}

			// The first console is still served if it gets an update.
			_ = first.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			err := rfb.SetEncodings(first, rfb.EncodingRaw)
			if err == nil {
				err = rfb.RequestUpdate(first, false, 0, 0, uint16(si.Width), uint16(si.Height))
			}
			if err == nil {
				_, err = rfb.ReadFramebufferUpdate(first, rfb.PixelFormat32)
			}
			if c.keepsOther && err != nil {
				t.Errorf("the first console was disconnected: %v", err)
			}
			if !c.keepsOther && !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Errorf("the first console got %v, want close 1000 (Xvnc disconnected it)", err)
			}
		})
	}
}

// TestViewOnlyUnknownMessage: a message type the filter does not know
// ends the console with close 1008.
func TestViewOnlyUnknownMessage(t *testing.T) {
	addr, _ := startVNCDemo(t)
	tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr), "view_only on"))
	stream, _ := rfbThroughProxy(t, tc.url("/websockify?token="+secretToken))
	if _, err := stream.Write([]byte{200, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	_, err := stream.Read(make([]byte, 1))
	for err == nil {
		_, err = stream.Read(make([]byte, 4096))
	}
	if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
		t.Fatalf("got %v, want close 1008", err)
	}
}

// TestRFBAwareBrowserHandshake: a browser that breaks the proxy's
// handshake, or never finishes it, gets close 1002 within dial_timeout.
func TestRFBAwareBrowserHandshake(t *testing.T) {
	addr, _ := startVNCDemo(t)
	tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr), "view_only on", "dial_timeout 1s"))
	for _, c := range []struct {
		name string
		send []byte
	}{
		{"garbage version", []byte("GET / HTTP/1.1\r\n\r\n")},
		{"silence", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ws := mustDialWS(t, tc.url("/websockify?token="+secretToken))
			_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			stream := wsstream.New(ws)
			if _, err := stream.Read(make([]byte, 12)); err != nil {
				t.Fatal(err)
			}
			if c.send != nil {
				if _, err := stream.Write(c.send); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			var err error
			for err == nil {
				_, err = stream.Read(make([]byte, 64))
			}
			if !websocket.IsCloseError(err, websocket.CloseProtocolError) {
				t.Fatalf("got %v, want close 1002", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("closed after %v", d)
			}
		})
	}
	waitSessionGoroutines(t)
}

// scriptedVNCServer answers every connection with the given writes, reading
// whatever the client sends in between, then holds it open.
func scriptedVNCServer(t *testing.T, writes ...string) string {
	t.Helper()
	l := listenLoopback(t)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 64)
				for i, w := range writes {
					if i > 0 {
						_, _ = c.Read(buf)
					}
					if _, err := c.Write([]byte(w)); err != nil {
						return
					}
				}
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// clockPixels samples vncdemo's clock digits (centred on the screen).
func clockPixels(fb *rfb.Framebuffer) string {
	var b strings.Builder
	for x := fb.Width/2 - 160; x < fb.Width/2+160; x += 3 {
		for y := fb.Height/2 - 28; y < fb.Height/2+28; y += 3 {
			r, g, bl := fb.At(x, y)
			fmt.Fprintf(&b, "%d%d%d", r, g, bl)
		}
	}
	return b.String()
}

func pixelIs(fb *rfb.Framebuffer, x, y int, r, g, b uint8) bool {
	pr, pg, pb := fb.At(x, y)
	return pr == r && pg == g && pb == b
}
