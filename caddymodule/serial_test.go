package caddymodule

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// serialOverWS makes a WebSocket to a serial console a net.Conn for
// testenv's serial helpers, whose reads time out every second (which a
// gorilla connection does not survive): the proxy's messages are read as
// one byte stream, and each write goes as one message, binary as the
// xterm.js page sends, or text (after sendText) as Horizon's page does. A
// message from the proxy that is not binary fails the test.
func serialOverWS(t *testing.T, ws *websocket.Conn) *serialConn {
	t.Helper()
	local, remote := net.Pipe()
	sc := &serialConn{Conn: local}
	go func() {
		defer remote.Close()
		for {
			got, p, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if got != websocket.BinaryMessage {
				t.Errorf("the proxy sent a message of type %d, want binary", got)
				return
			}
			if _, err := remote.Write(p); err != nil {
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := remote.Read(buf)
			if err != nil {
				return
			}
			mt := websocket.BinaryMessage
			if sc.text.Load() {
				mt = websocket.TextMessage
			}
			if err := ws.WriteMessage(mt, buf[:n]); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { local.Close() })
	return sc
}

// serialConn is a serial console's WebSocket as a net.Conn.
type serialConn struct {
	net.Conn
	text atomic.Bool
}

// sendText makes later writes text messages.
func (c *serialConn) sendText() { c.text.Store(true) }

// openSerial opens a serial console through the proxy as Horizon's page
// does (subprotocols "binary, base64"), waiting out a 409 for as long as
// the previous console takes to end.
func openSerial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	header := http.Header{"Sec-WebSocket-Protocol": {"binary, base64"}}
	var (
		ws     *websocket.Conn
		status int
		body   string
	)
	waitFor(t, 15*time.Second, "a serial console to open", func() bool {
		ws, status, body = dialWS(t, url, header)
		if ws == nil && status != http.StatusConflict {
			t.Fatalf("serial console refused: %d %s", status, body)
		}
		return ws != nil
	})
	if got := ws.Subprotocol(); got != "binary" {
		t.Errorf("subprotocol %q, want binary", got)
	}
	return ws
}

// runInGuest types command into the guest's shell on conn and waits for
// want in what comes back.
func runInGuest(t *testing.T, conn net.Conn, command, want string) {
	t.Helper()
	if _, err := conn.Write([]byte(command + "\n")); err != nil {
		t.Fatalf("typing %q: %v", command, err)
	}
	out, err := testenv.ReadSerialUntil(conn, want, 30*time.Second, "")
	if err != nil {
		t.Fatalf("%q: %v; read:\n%q", command, err, out)
	}
}

// TestSerialConsole drives a real Linux guest's serial console (QEMU's TCP
// chardev, as libvirt and nova configure it) through the proxy with
// protocol serial, over each transport: commands typed as binary and as
// text messages run; a second console for the guest, with the same or
// another token, is refused 409 while the first lives, and opens once it
// has ended. One guest serves every transport (it takes 30 to 40 s to
// boot on a loaded machine).
func TestSerialConsole(t *testing.T) {
	guest := testenv.StartSerialGuest(t)
	token, other := "serial-"+secretToken, "other-"+secretToken
	tokens := writeTokenFile(t, t.TempDir(), token+": "+guest, other+": "+guest)

	forEachTransport(t, func(t *testing.T, transport string) {
		tc := startCaddyOver(t, transport, fileSite(tokens, "protocol serial"))

		first := openSerial(t, tc.url("/websockify?token="+token))
		conn := serialOverWS(t, first)
		// The first transport waits for the guest to boot.
		testenv.WaitForSerialShell(t, conn, 3*time.Minute)
		runInGuest(t, conn, "echo binary-$((6*7))", "binary-42")

		// Horizon's page sends keystrokes as text messages.
		conn.sendText()
		runInGuest(t, conn, "echo text-$((6*7))", "text-42")

		for _, tok := range []string{token, other} {
			ws, status, body := dialWS(t, tc.url("/websockify?token="+tok), nil)
			if ws != nil || status != http.StatusConflict {
				t.Fatalf("second console: status %d %q, want 409", status, body)
			}
			if body != "console in use\n" {
				t.Errorf("409 body %q", body)
			}
			checkReason(t, body, guest)
		}
		// The first console is unharmed.
		runInGuest(t, conn, "echo still-$((6*7))", "still-42")

		_ = first.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		first.Close()
		second := openSerial(t, tc.url("/websockify?token="+other))
		conn2 := serialOverWS(t, second)
		testenv.WaitForSerialShell(t, conn2, 30*time.Second)
		runInGuest(t, conn2, "echo second-$((6*7))", "second-42")
		second.Close()

		logs := tc.logs()
		if !strings.Contains(logs, `"reason":"console in use"`) || !strings.Contains(logs, `"status":409`) {
			t.Error("no request refused line with status 409 and reason console in use in the log")
		}
		if strings.Contains(logs, secretToken) {
			t.Error("a token is in the log")
		}
	})
}

// TestProtocolProvision: what a JSON config (which the Caddyfile's checks
// do not see) cannot combine.
func TestProtocolProvision(t *testing.T) {
	for _, c := range []struct {
		handler map[string]any
		want    string
	}{
		{map[string]any{"protocol": "spice", "view_only": true}, "view_only needs protocol vnc, not spice"},
		{map[string]any{"protocol": "vnc", "check_rfb": false}, "check_rfb off contradicts protocol vnc"},
		{map[string]any{"protocol": "serial", "view_only": true}, "view_only needs protocol vnc, not serial"},
		{map[string]any{"check_rfb": false, "vnc_auth": map[string]any{"password": "{env.X}"}}, "vnc_auth needs protocol vnc, not raw"},
		{map[string]any{"protocol": "telnet"}, `protocol "telnet"`},
	} {
		h := map[string]any{"handler": "vnc_proxy", "resolver": map[string]any{"source": "file", "path": writeTokenFile(t, t.TempDir(), "a: 127.0.0.1:1")}}
		for k, v := range c.handler {
			h[k] = v
		}
		cfg, err := json.Marshal(map[string]any{
			"admin": map[string]any{"disabled": true},
			"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"srv0": map[string]any{
				"listen": []string{fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))},
				"routes": []any{map[string]any{"handle": []any{h}}},
			}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		err = caddy.Load(cfg, true)
		if err == nil {
			_ = caddy.Stop()
			t.Errorf("%v: loaded", c.handler)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %q, want %q", c.handler, err, c.want)
		}
	}
}

// TestProtocolRaw: protocol raw and its old spelling, check_rfb off, relay
// a target that does not speak RFB, whose first bytes reach the browser
// after the upgrade; a text message ends such a console with 1003 (only
// serial consoles take text); protocol vnc refuses the target with 502.
func TestProtocolRaw(t *testing.T) {
	l := listenLoopback(t)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
				buf := make([]byte, 512)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					_, _ = c.Write(buf[:n])
				}
			}()
		}
	}()
	tokens := writeTokenFile(t, t.TempDir(), secretToken+": "+l.Addr().String())
	tc := startCaddy(t, fmt.Sprintf(`route /raw {
		vnc_proxy {
			resolver file %[1]s
			protocol raw
		}
	}
	route /old-raw {
		vnc_proxy {
			resolver file %[1]s
			check_rfb off
		}
	}
	route /vnc {
		vnc_proxy {
			resolver file %[1]s
		}
	}`, tokens))

	for _, path := range []string{"/raw", "/old-raw"} {
		ws := mustDialWS(t, tc.url(path+"?token="+secretToken))
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, p, err := ws.ReadMessage(); err != nil || string(p) != "SSH-2.0-OpenSSH_9.2\r\n" {
			t.Fatalf("%s: first message %q, %v", path, p, err)
		}
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, p, err := ws.ReadMessage(); err != nil || string(p) != "ping" {
			t.Fatalf("%s: echo %q, %v", path, p, err)
		}
		if err := ws.WriteMessage(websocket.TextMessage, []byte("text")); err != nil {
			t.Fatal(err)
		}
		expectClose(t, ws, websocket.CloseUnsupportedData)
	}
	if ws, status, body := dialWS(t, tc.url("/vnc?token="+secretToken), nil); ws != nil || status != http.StatusBadGateway {
		t.Fatalf("protocol vnc to a target that is not RFB: %d %q, want 502", status, body)
	}
}
