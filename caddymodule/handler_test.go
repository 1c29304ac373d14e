package caddymodule

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
)

// A token long and random enough that finding it in a log is no accident.
const secretToken = "s3cr3t-T0KEN-0123456789abcdef"

// fileSite is a site body with vnc_proxy and the file resolver at
// /websockify.
func fileSite(tokenFile string, options ...string) string {
	return fmt.Sprintf("route /websockify {\n\t\tvnc_proxy {\n\t\t\tresolver file %s\n\t\t\t%s\n\t\t}\n\t}",
		tokenFile, strings.Join(options, "\n\t\t\t"))
}

// rfbThroughProxy runs the RFB client handshake through the proxy and
// returns what the server announced.
func rfbThroughProxy(t *testing.T, url string) (*wsstream.Stream, rfb.ServerInit) {
	t.Helper()
	ws := mustDialWS(t, url)
	if got := ws.Subprotocol(); got != "" {
		t.Errorf("subprotocol %q without one requested", got)
	}
	stream := wsstream.New(ws)
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	si, err := rfb.ClientHandshake(stream, "")
	if err != nil {
		t.Fatalf("RFB handshake through the proxy: %v", err)
	}
	return stream, si
}

// firstFrame asks for the whole screen in Raw encoding and returns the
// rectangles of the server's answer.
func firstFrame(t *testing.T, stream *wsstream.Stream, si rfb.ServerInit) []rfb.Rect {
	t.Helper()
	if err := rfb.SetPixelFormat32(stream); err != nil {
		t.Fatal(err)
	}
	if err := rfb.SetEncodings(stream, rfb.EncodingRaw); err != nil {
		t.Fatal(err)
	}
	if err := rfb.RequestUpdate(stream, false, 0, 0, uint16(si.Width), uint16(si.Height)); err != nil {
		t.Fatal(err)
	}
	rects, err := rfb.ReadFramebufferUpdate(stream, rfb.PixelFormat32)
	if err != nil {
		t.Fatalf("reading the first framebuffer update: %v", err)
	}
	return rects
}

func TestConsoleToVNCDemo(t *testing.T) { forEachTransport(t, testConsoleToVNCDemo) }

func testConsoleToVNCDemo(t *testing.T, transport string) {
	addr, _ := startVNCDemo(t)
	dir := t.TempDir()
	tc := startCaddyOver(t, transport, fileSite(writeTokenFile(t, dir, "# demo", "", secretToken+": "+addr)))

	stream, si := rfbThroughProxy(t, tc.url("/websockify?token="+secretToken))
	if si.Width != 800 || si.Height != 600 {
		t.Fatalf("framebuffer %dx%d, want 800x600", si.Width, si.Height)
	}
	fb := rfb.NewFramebuffer(800, 600)
	fb.Apply(firstFrame(t, stream, si))
	for _, c := range []struct {
		x, y    int
		r, g, b uint8
	}{{0, 0, 255, 0, 0}, {799, 0, 0, 255, 0}, {0, 599, 0, 0, 255}, {799, 599, 255, 255, 255}} {
		if r, g, b := fb.At(c.x, c.y); r != c.r || g != c.g || b != c.b {
			t.Errorf("pixel (%d,%d) = %d,%d,%d, want %d,%d,%d", c.x, c.y, r, g, b, c.r, c.g, c.b)
		}
	}
}

func TestConsoleToXvnc(t *testing.T) {
	addr := testenv.StartXvnc(t)
	dir := t.TempDir()
	tc := startCaddy(t, fileSite(writeTokenFile(t, dir, secretToken+": "+addr)))

	stream, si := rfbThroughProxy(t, tc.url("/websockify?token="+secretToken))
	if si.Width != 800 || si.Height != 600 {
		t.Fatalf("framebuffer %dx%d, want 800x600", si.Width, si.Height)
	}
	if rects := firstFrame(t, stream, si); len(rects) == 0 {
		t.Fatal("Xvnc sent an empty framebuffer update")
	}
}

func TestSubprotocolBinary(t *testing.T) {
	addr, _ := startVNCDemo(t)
	tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr)))
	d := websocket.Dialer{Subprotocols: []string{"binary"}}
	ws, _, err := d.Dial(tc.url("/websockify?token="+secretToken), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if got := ws.Subprotocol(); got != "binary" {
		t.Errorf("subprotocol %q, want binary", got)
	}
}

// TestRefusals produces each pre-upgrade status of the contract and checks
// that the body is a short reason without the token or the target.
func TestRefusals(t *testing.T) { forEachTransport(t, testRefusals) }

func testRefusals(t *testing.T, transport string) {
	vnc, _ := startVNCDemo(t)
	refused := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))

	notRFB, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer notRFB.Close()
	go func() {
		for {
			c, err := notRFB.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "SSH-2.0-OpenSSH_9.2\r\n")
			c.Close()
		}
	}()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silentConns := make(chan net.Conn, 16)
	defer func() {
		for len(silentConns) > 0 {
			(<-silentConns).Close()
		}
	}()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			silentConns <- c // held open, never greeting
		}
	}()

	expired := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"host": %q, "expires_at": %q}`, vnc, time.Now().Add(-time.Minute).Format(time.RFC3339))
	}))
	defer expired.Close()

	dir := t.TempDir()
	tokens := writeTokenFile(t, dir,
		"good-"+secretToken+": "+vnc,
		"refused-"+secretToken+": "+refused,
		"notrfb-"+secretToken+": "+notRFB.Addr().String(),
		"silent-"+secretToken+": "+silent.Addr().String(),
	)
	deadResolver := fmt.Sprintf("http://127.0.0.1:%d/{token}", testenv.FreePort(t))
	tc := startCaddyOver(t, transport, fmt.Sprintf(`route /websockify {
		vnc_proxy {
			resolver file %s
			dial_timeout 500ms
		}
	}
	route /expired {
		vnc_proxy {
			resolver http %s/{token}
		}
	}
	route /unavailable {
		vnc_proxy {
			resolver http %s {
				timeout 500ms
			}
		}
	}`, tokens, expired.URL, deadResolver))

	cases := []struct {
		name   string
		path   string
		origin string
		status int
	}{
		{"no token", "/websockify", "", http.StatusUnauthorized},
		{"unknown token", "/websockify?token=unknown-" + secretToken, "", http.StatusForbidden},
		{"expired token", "/expired?token=" + secretToken, "", http.StatusForbidden},
		{"foreign origin", "/websockify?token=good-" + secretToken, "http://evil.example", http.StatusForbidden},
		{"resolver down", "/unavailable?token=" + secretToken, "", http.StatusServiceUnavailable},
		{"target refuses", "/websockify?token=refused-" + secretToken, "", http.StatusBadGateway},
		{"target not RFB", "/websockify?token=notrfb-" + secretToken, "", http.StatusBadGateway},
		{"target silent", "/websockify?token=silent-" + secretToken, "", http.StatusBadGateway},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			if c.origin != "" {
				h.Set("Origin", c.origin)
			}
			ws, status, body := dialWS(t, tc.url(c.path), h)
			if ws != nil {
				t.Fatalf("upgraded, want status %d", c.status)
			}
			if status != c.status {
				t.Errorf("status %d (%q), want %d", status, body, c.status)
			}
			checkReason(t, body, vnc, refused, notRFB.Addr().String(), silent.Addr().String())
		})
	}

	t.Run("not an upgrade", func(t *testing.T) {
		resp, err := tc.httpClient().Get(tc.httpURL("/websockify?token=good-" + secretToken))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status %d, want 400", resp.StatusCode)
		}
		checkReason(t, string(body), vnc)
	})

	t.Run("token in cookie", func(t *testing.T) {
		h := http.Header{}
		h.Set("Cookie", "token=good-"+secretToken)
		ws, status, body := dialWS(t, tc.url("/websockify"), h)
		if ws == nil {
			t.Fatalf("status %d: %s", status, body)
		}
	})

	if logs := tc.logs(); strings.Contains(logs, secretToken) {
		t.Errorf("the token appears in Caddy's logs:\n%s", logs)
	} else if !strings.Contains(logs, admission.TokenHash("unknown-"+secretToken)) {
		t.Errorf("the logs carry no token_hash:\n%s", logs)
	}
}

// checkReason fails unless body is a short reason that names neither the
// token nor any target.
func checkReason(t *testing.T, body string, targets ...string) {
	t.Helper()
	if body == "" || len(body) > 100 {
		t.Errorf("body %q is not a short reason", body)
	}
	if strings.Contains(body, secretToken) {
		t.Errorf("body %q contains the token", body)
	}
	for _, target := range targets {
		if strings.Contains(body, target) {
			t.Errorf("body %q contains the target %s", body, target)
		}
	}
}

func TestOrigins(t *testing.T) {
	addr, _ := startVNCDemo(t)
	tokens := writeTokenFile(t, t.TempDir(), secretToken+": "+addr)
	tc := startCaddy(t, fileSite(tokens))
	self := "http://" + tc.addr
	cases := []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{self, true},
		{"HTTP://" + tc.addr, true},
		{"http://evil.example", false},
		{"http://127.0.0.1:1", false},
		{"null", false},
		// The same host over another scheme is another origin: a plain
		// http:// page can be forged by anyone on the path.
		{"https://" + tc.addr, false},
		{"http://user@" + tc.addr, false},
		{"http://" + tc.addr + "/page", false},
	}
	for _, c := range cases {
		h := http.Header{}
		if c.origin != "" {
			h.Set("Origin", c.origin)
		}
		ws, status, _ := dialWS(t, tc.url("/websockify?token="+secretToken), h)
		if got := ws != nil; got != c.ok {
			t.Errorf("Origin %q: upgraded %v (status %d), want %v", c.origin, got, status, c.ok)
		}
		if ws != nil {
			ws.Close()
		}
	}

	tc.load(fileSite(tokens, "allowed_origins https://console.example.com http://Admin.Example.com:8080"))
	for _, c := range []struct {
		origin string
		ok     bool
	}{
		{"https://console.example.com", true},
		{"https://console.example.com:443", true},
		{"http://admin.example.com:8080", true},
		{"http://console.example.com", false},
		{self, false},
	} {
		h := http.Header{"Origin": {c.origin}}
		ws, status, _ := dialWS(t, tc.url("/websockify?token="+secretToken), h)
		if got := ws != nil; got != c.ok {
			t.Errorf("allowed_origins, Origin %q: upgraded %v (status %d), want %v", c.origin, got, status, c.ok)
		}
		if ws != nil {
			ws.Close()
		}
	}
}

// TestTokenFileEdit: a change to the token file takes effect without a
// config reload.
func TestTokenFileEdit(t *testing.T) {
	addr, _ := startVNCDemo(t)
	dir := t.TempDir()
	path := writeTokenFile(t, dir, "first-"+secretToken+": "+addr)
	tc := startCaddy(t, fileSite(path))

	opens := func(token string) bool {
		ws, _, _ := dialWS(t, tc.url("/websockify?token="+token), nil)
		if ws != nil {
			ws.Close()
		}
		return ws != nil
	}
	if !opens("first-" + secretToken) {
		t.Fatal("the first token does not open")
	}
	if opens("second-" + secretToken) {
		t.Fatal("the second token opens before it was added")
	}
	writeFileAtomic(t, path, "second-"+secretToken+": "+addr+"\n")
	waitFor(t, 5*time.Second, "the added token to open", func() bool { return opens("second-" + secretToken) })
	if opens("first-" + secretToken) {
		t.Error("the removed token still opens")
	}
}

// TestRelayIntegrity moves tens of MB each way and checks every byte, with
// the splice relay (plain TCP on Linux), with the copying one (other
// systems), over TLS (the copying relay, a frame's records gathered into
// one write), and over HTTP/2 and HTTP/3 streams.
func TestRelayIntegrity(t *testing.T) {
	t.Run("splice", func(t *testing.T) { testRelayIntegrity(t, "ws") })
	t.Run("copy", func(t *testing.T) {
		console.CopyRelayOnly.Store(true)
		t.Cleanup(func() { console.CopyRelayOnly.Store(false) })
		testRelayIntegrity(t, "ws")
	})
	t.Run("wss", func(t *testing.T) { testRelayIntegrity(t, "wss") })
	t.Run("h2", func(t *testing.T) { testRelayIntegrity(t, "h2") })
	t.Run("h3", func(t *testing.T) { testRelayIntegrity(t, "h3") })
}

func testRelayIntegrity(t *testing.T, transport string) {
	addr, _ := startLoadTarget(t)
	tc := startCaddyOver(t, transport, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr)))
	checkRelayIntegrity(t, tc)
}

// checkRelayIntegrity moves 32 MiB each way through tc to a loadtarget
// behind secretToken and checks every byte.
func checkRelayIntegrity(t *testing.T, tc *testCaddy) {
	const size = 32 << 20

	t.Run("to browser", func(t *testing.T) {
		stream := openLoad(t, tc, 's', size)
		want := make([]byte, 64<<10)
		got := make([]byte, 64<<10)
		for off := int64(0); off < size; {
			n := min(int64(len(got)), size-off)
			if _, err := io.ReadFull(stream, got[:n]); err != nil {
				t.Fatalf("at byte %d: %v", off, err)
			}
			loadtarget.Stream(want[:n], off)
			if !bytes.Equal(got[:n], want[:n]) {
				t.Fatalf("bytes %d..%d differ from what the target sent", off, off+n)
			}
			off += n
		}
		expectClose(t, stream.Conn, websocket.CloseNormalClosure)
	})

	t.Run("to target", func(t *testing.T) {
		stream := openLoad(t, tc, 'v', size)
		// Messages of odd sizes, so that frames and reads never line up.
		rng := rand.New(rand.NewPCG(1, 2))
		msg := make([]byte, 96<<10)
		for sent := 0; sent < size; {
			k := min(1+rng.IntN(len(msg)), size-sent)
			loadtarget.Stream(msg[:k], int64(sent))
			if _, err := stream.Write(msg[:k]); err != nil {
				t.Fatalf("at byte %d: %v", sent, err)
			}
			sent += k
		}
		var matched [8]byte
		if _, err := io.ReadFull(stream, matched[:]); err != nil {
			t.Fatal(err)
		}
		if m := binary.BigEndian.Uint64(matched[:]); m != size {
			t.Fatalf("the target received a corrupted stream near offset %d of %d", m, size)
		}
	})

	t.Run("echo in order", func(t *testing.T) {
		stream := openLoad(t, tc, 'e', 0)
		rng := rand.New(rand.NewPCG(3, 4))
		var sent bytes.Buffer
		for range 500 {
			msg := make([]byte, 1+rng.IntN(4000))
			for i := range msg {
				msg[i] = byte(rng.Uint32())
			}
			sent.Write(msg)
			if _, err := stream.Write(msg); err != nil {
				t.Fatal(err)
			}
		}
		got := make([]byte, sent.Len())
		if _, err := io.ReadFull(stream, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, sent.Bytes()) {
			t.Fatal("echoed bytes differ from those sent")
		}
	})
}

// openLoad opens a session to a loadtarget and sends it a command.
func openLoad(t *testing.T, tc *testCaddy, cmd byte, n int64) *wsstream.Stream {
	t.Helper()
	ws := mustDialWS(t, tc.url("/websockify?token="+secretToken))
	_ = ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	stream := wsstream.New(ws)
	greeting := make([]byte, len(loadtarget.Greeting))
	if _, err := io.ReadFull(stream, greeting); err != nil || string(greeting) != loadtarget.Greeting {
		t.Fatalf("greeting %q, %v", greeting, err)
	}
	msg := []byte{cmd}
	if cmd == 's' || cmd == 'v' {
		msg = binary.BigEndian.AppendUint64(msg, uint64(n))
	}
	if _, err := stream.Write(msg); err != nil {
		t.Fatal(err)
	}
	return stream
}

// expectClose reads until the WebSocket closes and checks the close code.
func expectClose(t *testing.T, ws *websocket.Conn, code int) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, code) {
			t.Fatalf("session ended with %v, want close code %d", err, code)
		}
		return
	}
}

// TestSessionEnds: whichever side ends, the other is closed promptly and no
// goroutine is left.
func TestSessionEnds(t *testing.T) {
	addr, target := startLoadTarget(t)
	tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr)))
	// Warm up: the first session starts Caddy's lazily started goroutines.
	openLoad(t, tc, 'e', 0).Conn.Close()
	waitFor(t, 5*time.Second, "the warm-up session to end", func() bool { return target.Conns() == 0 && console.Sessions.Len() == 0 })

	t.Run("browser vanishes", func(t *testing.T) {
		stream := openLoad(t, tc, 'i', 0)
		waitFor(t, 5*time.Second, "the session to start", func() bool { return target.Conns() == 1 })
		stream.Conn.NetConn().Close() // no close frame: the browser is just gone
		waitFor(t, 5*time.Second, "the target connection to close", func() bool { return target.Conns() == 0 })
		waitFor(t, 5*time.Second, "the session to end", func() bool { return console.Sessions.Len() == 0 })
		waitSessionGoroutines(t)
	})

	t.Run("browser closes", func(t *testing.T) {
		stream := openLoad(t, tc, 'i', 0)
		waitFor(t, 5*time.Second, "the session to start", func() bool { return target.Conns() == 1 })
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		if err := stream.Conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the target connection to close", func() bool { return target.Conns() == 0 })
		waitFor(t, 5*time.Second, "the session to end", func() bool { return console.Sessions.Len() == 0 })
		waitSessionGoroutines(t)
	})

	t.Run("server closes", func(t *testing.T) {
		stream := openLoad(t, tc, 's', 1000)
		got := make([]byte, 1000)
		if _, err := io.ReadFull(stream, got); err != nil {
			t.Fatal(err)
		}
		expectClose(t, stream.Conn, websocket.CloseNormalClosure)
		stream.Conn.Close()
		waitFor(t, 5*time.Second, "the session to end", func() bool { return console.Sessions.Len() == 0 })
		waitSessionGoroutines(t)
	})

	t.Run("browser stops reading", func(t *testing.T) {
		// The target sends more than the sockets buffer; the browser reads
		// none of it, so a frame is stuck half-written when the idle
		// timeout ends the session. Its close frame cannot go out, and the
		// stuck write gives up once the browser has taken nothing for two
		// ping intervals.
		tc.load(fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr), "idle_timeout 200ms", "ping_interval 1s"))
		stream := openLoad(t, tc, 's', 1<<30)
		waitFor(t, 10*time.Second, "the stalled session to end", func() bool { return console.Sessions.Len() == 0 })
		waitSessionGoroutines(t)
		stream.Conn.Close()
	})

	t.Run("server vanishes", func(t *testing.T) {
		vncAddr, vnc := startVNCDemo(t)
		tc.load(fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+vncAddr)))
		_, _ = rfbThroughProxy(t, tc.url("/websockify?token="+secretToken))
		vnc.Close()
		waitFor(t, 5*time.Second, "the session to end", func() bool { return console.Sessions.Len() == 0 })
	})
}

func TestCloseCodes(t *testing.T) { forEachTransport(t, testCloseCodes) }

func testCloseCodes(t *testing.T, transport string) {
	addr, target := startLoadTarget(t)
	tokens := writeTokenFile(t, t.TempDir(), secretToken+": "+addr)
	tc := startCaddyOver(t, transport, fileSite(tokens, "max_message_size 1KiB"))

	t.Run("oversized message", func(t *testing.T) {
		stream := openLoad(t, tc, 'i', 0)
		if _, err := stream.Write(make([]byte, 2048)); err != nil {
			t.Fatal(err)
		}
		expectClose(t, stream.Conn, websocket.CloseMessageTooBig)
	})
	t.Run("text message", func(t *testing.T) {
		stream := openLoad(t, tc, 'i', 0)
		if err := stream.Conn.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		expectClose(t, stream.Conn, websocket.CloseUnsupportedData)
	})
	t.Run("idle timeout", func(t *testing.T) {
		tc.load(fileSite(tokens, "idle_timeout 300ms"))
		stream := openLoad(t, tc, 'i', 0)
		start := time.Now()
		expectClose(t, stream.Conn, websocket.CloseNormalClosure)
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("the idle session ended after %v, before idle_timeout", d)
		}
	})
	t.Run("unanswered pings", func(t *testing.T) {
		tc.load(fileSite(tokens, "ping_interval 100ms"))
		// A client that never reads never answers pings.
		openLoad(t, tc, 'i', 0)
		waitFor(t, 5*time.Second, "the silent session to end", func() bool { return target.Conns() == 0 })
	})
	t.Run("browser's ping", func(t *testing.T) {
		stream := openLoad(t, tc, 'e', 0)
		pong := make(chan string, 1)
		stream.Conn.SetPongHandler(func(data string) error {
			pong <- data
			return nil
		})
		if err := stream.Conn.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		// Reading handles the pong; the echo comes after it.
		if _, err := stream.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(stream, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-pong:
			if got != "are you there" {
				t.Errorf("pong %q, want the ping's data", got)
			}
		default:
			t.Error("the proxy did not answer the browser's ping")
		}
	})
	t.Run("answered pings", func(t *testing.T) {
		tc.load(fileSite(tokens, "ping_interval 100ms"))
		stream := openLoad(t, tc, 'e', 0)
		ping := []byte("ping")
		for range 10 {
			time.Sleep(100 * time.Millisecond)
			// Reading answers the proxy's pings.
			if _, err := stream.Write(ping); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(ping))
			if _, err := io.ReadFull(stream, got); err != nil {
				t.Fatalf("session ended while the browser answered pings: %v", err)
			}
		}
	})
}

// TestReloadKeepsSessions: a config reload leaves live consoles running.
func TestReloadKeepsSessions(t *testing.T) { forEachTransport(t, testReloadKeepsSessions) }

func testReloadKeepsSessions(t *testing.T, transport string) {
	addr, _ := startLoadTarget(t)
	tokens := writeTokenFile(t, t.TempDir(), secretToken+": "+addr)
	tc := startCaddyOver(t, transport, fileSite(tokens))
	stream := openLoad(t, tc, 'e', 0)
	echoOnce(t, stream, "before reload")
	tc.load(fileSite(tokens, "dial_timeout 3s"))
	echoOnce(t, stream, "after reload")
	tc.load(`respond "no consoles here"`)
	echoOnce(t, stream, "after the handler is gone")
}

func TestUnixAndIPv6Targets(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vnc.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	unixTarget := &loadtarget.Server{}
	go func() { _ = unixTarget.Serve(ul) }()
	defer unixTarget.Close()

	lines := []string{
		"unix-socket: unix_socket:" + sock,
		"unix: unix:" + sock,
	}
	if l6, err := net.Listen("tcp", "[::1]:0"); err == nil {
		v6 := &loadtarget.Server{}
		go func() { _ = v6.Serve(l6) }()
		defer v6.Close()
		port := l6.Addr().(*net.TCPAddr).Port
		lines = append(lines, fmt.Sprintf("v6-bracket: [::1]:%d", port), fmt.Sprintf("v6-bare: ::1:%d", port))
	} else {
		t.Logf("no IPv6 loopback here (%v): testing unix sockets only", err)
	}
	tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(), lines...)))
	for _, line := range lines {
		token := line[:strings.Index(line, ":")]
		ws := mustDialWS(t, tc.url("/websockify?token="+token))
		stream := wsstream.New(ws)
		got := make([]byte, len(loadtarget.Greeting))
		if _, err := io.ReadFull(stream, got); err != nil || string(got) != loadtarget.Greeting {
			t.Errorf("%s: greeting %q, %v", line, got, err)
		}
		ws.Close()
	}
}
