package caddymodule

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/internal/vncdemo"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsconnect"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
)

// streamSite starts the real Caddy binary with an HTTPS site and Caddy's
// default protocols, consoles at /websockify to vncdemo ("demo-" token),
// Xvnc ("xvnc-") and a loadtarget (the plain token).
func streamSite(t *testing.T, c caddyProcess) (*testCaddy, *testenv.Process) {
	t.Helper()
	demo, _ := startVNCDemo(t)
	xvnc := testenv.StartXvnc(t)
	load, _ := startLoadTarget(t)
	dir := t.TempDir()
	tokens := writeTokenFile(t, dir,
		"demo-"+secretToken+": "+demo,
		"xvnc-"+secretToken+": "+xvnc,
		secretToken+": "+load)
	c.https = true
	site, proc := startCaddyProcessWith(t, dir, c, streamSiteBody(tokens, ""))
	tc := &testCaddy{t: t, dir: dir, addr: site, logFile: filepath.Join(dir, "caddy.log"), transport: "h3"}
	client := tc.httpClient()
	waitFor(t, 15*time.Second, "the site's certificate", func() bool {
		resp, err := client.Get(tc.httpURL("/"))
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return tc, proc
}

func streamSiteBody(tokens, options string) string {
	return fmt.Sprintf("vnc_proxy /websockify {\n\t\tresolver file %s\n\t\t%s\n\t}", tokens, options)
}

// over returns tc for another transport.
func (tc *testCaddy) over(transport string) *testCaddy {
	c := *tc
	c.transport = transport
	return &c
}

// checkStreamConsoles runs consoles over tc's transport to vncdemo, Xvnc
// and a loadtarget, and the refusals, against the real binary.
func checkStreamConsoles(t *testing.T, tc *testCaddy) {
	t.Run("vncdemo", func(t *testing.T) {
		stream, si := rfbThroughProxy(t, tc.url("/websockify?token=demo-"+secretToken))
		if si.Width != 800 || si.Height != 600 {
			t.Fatalf("framebuffer %dx%d, want 800x600", si.Width, si.Height)
		}
		if rects := firstFrame(t, stream, si); len(rects) == 0 {
			t.Fatal("empty framebuffer update")
		}
	})
	t.Run("Xvnc", func(t *testing.T) {
		stream, si := rfbThroughProxy(t, tc.url("/websockify?token=xvnc-"+secretToken))
		if rects := firstFrame(t, stream, si); len(rects) == 0 {
			t.Fatal("Xvnc sent an empty framebuffer update")
		}
	})
	t.Run("bytes intact both ways", func(t *testing.T) { checkRelayIntegrity(t, tc) })
	t.Run("refusals", func(t *testing.T) {
		for _, c := range []struct {
			path, origin string
			status       int
		}{
			{"/websockify", "", http.StatusUnauthorized},
			{"/websockify?token=unknown-" + secretToken, "", http.StatusForbidden},
			{"/websockify?token=" + secretToken, "https://evil.example", http.StatusForbidden},
		} {
			h := http.Header{}
			if c.origin != "" {
				h.Set("Origin", c.origin)
			}
			ws, status, body := dialWS(t, tc.url(c.path), h)
			if ws != nil || status != c.status {
				t.Errorf("%s (origin %q): status %d, want %d", c.path, c.origin, status, c.status)
			}
			checkReason(t, body)
		}
	})
	t.Run("the browser's close is echoed", func(t *testing.T) {
		stream := openLoad(t, tc, 'i', 0)
		if err := stream.Conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, ""), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		expectClose(t, stream.Conn, 4001)
	})
}

// echoOnce sends msg through an echoing console and reads it back.
func echoOnce(t *testing.T, stream *wsstream.Stream, msg string) {
	t.Helper()
	if _, err := stream.Write([]byte(msg)); err != nil {
		t.Fatalf("echo %q: %v", msg, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(stream, got); err != nil || string(got) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, got, err)
	}
}

// TestStreamsWithDefaultProtocols: the real binary, Caddy's default
// protocols and no GODEBUG, as operators run it. HTTP/3 consoles work and
// survive a reload; HTTP/2 offers no extended CONNECT, so browsers open
// their WebSocket over HTTP/1.1, which works as before.
func TestStreamsWithDefaultProtocols(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	tc, _ := streamSite(t, caddyProcess{admin: admin})
	t.Run("h3", func(t *testing.T) { checkStreamConsoles(t, tc.over("h3")) })

	t.Run("h2 offers no extended CONNECT", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d := wsconnect.NewH2(&tls.Config{InsecureSkipVerify: true})
		defer d.Transport.CloseIdleConnections()
		ws, _, err := d.Dial(ctx, tc.httpURL("/websockify?token="+secretToken), nil)
		if ws != nil || !errors.Is(err, wsconnect.ErrNotOffered) {
			t.Fatalf("extended CONNECT over HTTP/2 without the setting: %v", err)
		}
		// What a browser does then: wss:// over HTTP/1.1.
		wd := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, HandshakeTimeout: 10 * time.Second}
		wss, _, err := wd.Dial("wss://"+tc.addr+"/websockify?token="+secretToken, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer wss.Close()
		if _, msg, err := wss.ReadMessage(); err != nil || string(msg) != loadtarget.Greeting {
			t.Fatalf("greeting %q, %v", msg, err)
		}
	})

	t.Run("a reload under a live h3 console", func(t *testing.T) {
		h3 := tc.over("h3")
		stream := openLoad(t, h3, 'e', 0)
		echoOnce(t, stream, "before the reload")
		tokens := filepath.Join(tc.dir, "vnc-tokens")
		reloadCaddyProcess(t, caddyProcess{admin: admin, https: true}, tc.dir, tc.addr, streamSiteBody(tokens, "dial_timeout 3s"))
		echoOnce(t, stream, "after the reload")
		// And the new config takes new HTTP/3 consoles.
		echoOnce(t, openLoad(t, h3, 'e', 0), "a console of the new config")
	})
}

// TestStreamsWithXConnect: the real binary with GODEBUG=http2xconnect=1,
// where Go's HTTP/2 server offers extended CONNECT too; and the exit ends
// consoles on both kinds of stream with 1001 at once, though Caddy's
// servers wait for their requests before its exit hooks run.
func TestStreamsWithXConnect(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	tc, proc := streamSite(t, caddyProcess{xconnect: true})
	t.Run("h2", func(t *testing.T) { checkStreamConsoles(t, tc.over("h2")) })

	t.Run("exit", func(t *testing.T) {
		h2 := openLoad(t, tc.over("h2"), 'e', 0)
		h3 := openLoad(t, tc.over("h3"), 'e', 0)
		echoOnce(t, h2, "h2")
		echoOnce(t, h3, "h3")
		start := time.Now()
		if err := proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		expectClose(t, h2.Conn, websocket.CloseGoingAway)
		expectClose(t, h3.Conn, websocket.CloseGoingAway)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("the consoles got 1001 %v after SIGTERM", d)
		}
		// As a browser does after the close handshake; Caddy's HTTP/3
		// server waits for its clients to close their connections.
		h2.Conn.Close()
		h3.Conn.Close()
		select {
		case <-proc.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("caddy did not exit 10s after SIGTERM")
		}
	})
}

// TestStalledBrowserOnStream: a browser on an HTTP/2 or HTTP/3 stream that
// stops reading stalls the proxy's writes on the stream's flow control; the
// session ends within a few ping intervals, its stream is reset, and no
// goroutine is left (the request's handler returns).
func TestStalledBrowserOnStream(t *testing.T) {
	for _, transport := range []string{"h2", "h3"} {
		t.Run(transport, func(t *testing.T) {
			addr, target := startLoadTarget(t)
			tc := startCaddyOver(t, transport, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr), "ping_interval 200ms"))
			// The console streams; the browser reads its greeting only.
			streamingConsole(t, tc.url("/websockify?token="+secretToken), 1<<40, nil)
			waitFor(t, 5*time.Second, "the stalled session to end", func() bool {
				return strings.Contains(tc.logs(), `"reason":"browser stopped reading"`)
			})
			waitFor(t, 5*time.Second, "the VNC server's connection to close", func() bool { return target.Conns() == 0 })
			waitSessionGoroutines(t)
		})
	}
}

// TestRFBAwareOnStreams: the RFB-aware mode over every transport: the
// proxy logs in to vncdemo with its password and the browser gets security
// None, a view-only console among them.
func TestRFBAwareOnStreams(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		const password = "stream-pw"
		addr := startVNCDemoWith(t, &vncdemo.Server{Password: password})
		tc := startCaddyOver(t, transport, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr),
			"vnc_auth {\n\t\t\tpassword "+password+"\n\t\t}", "view_only on"))
		stream, si := rfbThroughProxy(t, tc.url("/websockify?token="+secretToken))
		if si.Width != 800 || si.Height != 600 {
			t.Fatalf("framebuffer %dx%d, want 800x600", si.Width, si.Height)
		}
		if rects := firstFrame(t, stream, si); len(rects) == 0 {
			t.Fatal("empty framebuffer update")
		}
	})
}

// TestQuietStreamConsole: Caddy's read and write idle timeouts, which
// bound ordinary requests, do not end a console on a stream whose browser
// sends nothing for longer: the session's own pings and checks keep it.
func TestQuietStreamConsole(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		addr, _ := startLoadTarget(t)
		tc := startCaddyServers(t, transport, "timeouts {\n\t\t\tread_body_idle 300ms\n\t\t\twrite_idle 300ms\n\t\t}",
			fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr), "ping_interval 0"))
		stream := openLoad(t, tc, 'e', 0)
		time.Sleep(time.Second)
		echoOnce(t, stream, "still here after a quiet second")
	})
}

// TestGracePeriodAndHTTP3Reload shows why the README says to leave Caddy's
// grace_period unset on a console site: once it passes after a reload, the
// old config's HTTP/3 server closes its QUIC connections, and the HTTP/3
// consoles on them end; an HTTP/2 console stays. Should Caddy keep HTTP/3
// connections with live requests, the HTTP/3 half fails and the README's
// warning can go.
func TestGracePeriodAndHTTP3Reload(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	c := caddyProcess{admin: admin, xconnect: true, global: "grace_period 1s"}
	tc, _ := streamSite(t, c)
	h2 := openLoad(t, tc.over("h2"), 'e', 0)
	h3 := openLoad(t, tc.over("h3"), 'e', 0)
	c.https = true
	reloadCaddyProcess(t, c, tc.dir, tc.addr, streamSiteBody(filepath.Join(tc.dir, "vnc-tokens"), "dial_timeout 3s"))
	time.Sleep(2500 * time.Millisecond)
	echoOnce(t, h2, "an HTTP/2 console after the grace period")
	if _, err := h3.Write([]byte("x")); err == nil {
		_ = h3.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = h3.Read(make([]byte, 1))
		if err == nil {
			t.Fatal("the HTTP/3 console outlived the grace period of the config it was opened on")
		}
	}
}
