package caddymodule

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// streamingConsole opens a console to a load target that streams n bytes
// to the browser, and reads the greeting.
func streamingConsole(t *testing.T, url string, n int64, dialer *websocket.Dialer) *websocket.Conn {
	t.Helper()
	var ws *websocket.Conn
	if dialer == nil {
		ws = mustDialWS(t, url)
	} else {
		var err error
		if ws, _, err = dialer.Dial(url, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
	}
	_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != loadtarget.Greeting {
		t.Fatalf("greeting %q, %v", msg, err)
	}
	cmd := binary.BigEndian.AppendUint64([]byte{'s'}, uint64(n))
	if err := ws.WriteMessage(websocket.BinaryMessage, cmd); err != nil {
		t.Fatal(err)
	}
	return ws
}

// readUntilClose reads data messages until an error, which it returns.
func readUntilClose(ws *websocket.Conn) error {
	for {
		_, r, err := ws.NextReader()
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
	}
}

func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

// TestCloseFramesWhileStreaming: while the VNC server streams, the close
// frame the proxy sends comes after the data frame in flight and reaches
// the browser, however the session ends.
func TestCloseFramesWhileStreaming(t *testing.T) {
	forEachTransport(t, testCloseFramesWhileStreaming)
}

func testCloseFramesWhileStreaming(t *testing.T, transport string) {
	addr, _ := startLoadTarget(t)
	tc := startCaddyOver(t, transport, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr), "max_message_size 64KiB"))
	url := tc.url("/websockify?token=" + secretToken)
	cases := []struct {
		name string
		act  func(ws *websocket.Conn) error
		want int
	}{
		{"a message over max_message_size: 1009", func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.BinaryMessage, make([]byte, 200<<10))
		}, websocket.CloseMessageTooBig},
		{"the browser's close 1000 is echoed", func(ws *websocket.Conn) error {
			return ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		}, websocket.CloseNormalClosure},
		{"the browser's close 4000 is echoed", func(ws *websocket.Conn) error {
			return ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"), time.Now().Add(time.Second))
		}, 4000},
		{"a frame length with the top bit set: 1002", func(ws *websocket.Conn) error {
			// A masked binary frame announcing 2^63 + 5 bytes.
			frame := []byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4}
			_, err := ws.UnderlyingConn().Write(frame)
			return err
		}, websocket.CloseProtocolError},
		{"an unmasked frame: 1002", func(ws *websocket.Conn) error {
			_, err := ws.UnderlyingConn().Write([]byte{0x82, 3, 1, 2, 3})
			return err
		}, websocket.CloseProtocolError},
		{"a fragmented ping: 1002", func(ws *websocket.Conn) error {
			_, err := ws.UnderlyingConn().Write([]byte{0x09, 0x80, 1, 2, 3, 4})
			return err
		}, websocket.CloseProtocolError},
		{"a continuation with no message begun: 1002", func(ws *websocket.Conn) error {
			_, err := ws.UnderlyingConn().Write([]byte{0x80, 0x81, 1, 2, 3, 4, 5})
			return err
		}, websocket.CloseProtocolError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for try := range 10 {
				ws := streamingConsole(t, url, 1<<40, nil)
				done := make(chan error, 1)
				go func() { done <- readUntilClose(ws) }()
				time.Sleep(20 * time.Millisecond) // the stream is flowing
				// The proxy's answer may come while the act is still
				// writing (a 1009 mid-message): then gorilla has answered
				// its close, and the write reports that.
				if err := c.act(ws); err != nil && !errors.Is(err, websocket.ErrCloseSent) {
					t.Fatal(err)
				}
				select {
				case err := <-done:
					if got := closeCode(err); got != c.want {
						t.Fatalf("try %d: the stream ended with %v, want close %d", try, err, c.want)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("try %d: no close frame in 10s", try)
				}
				ws.Close()
			}
		})
	}
	waitSessionGoroutines(t)
}

// TestStalledPeers: no write waits without bound. A session whose VNC
// server stops reading, or whose browser stops reading while sending
// unsolicited pongs (which keep its read deadline alive), ends within a
// few ping intervals, and leaves nothing behind.
func TestStalledPeers(t *testing.T) {
	// A VNC server that greets and never reads, with a small receive window.
	deaf := listenLoopback(t)
	go func() {
		for {
			c, err := deaf.Accept()
			if err != nil {
				return
			}
			_ = c.(*net.TCPConn).SetReadBuffer(4096)
			_, _ = io.WriteString(c, loadtarget.Greeting)
			t.Cleanup(func() { c.Close() })
		}
	}()
	streaming, _ := startLoadTarget(t)
	tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(),
		"deaf: "+deaf.Addr().String(), "stream: "+streaming), "ping_interval 200ms"))
	smallWindow := smallWindowDialer(4096)

	t.Run("the VNC server stops reading, then the browser vanishes", func(t *testing.T) {
		ws := mustDialWS(t, tc.url("/websockify?token=deaf"))
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		// 10 MB at a server that reads nothing: the proxy's write blocks.
		chunk := make([]byte, 64<<10)
		_ = ws.SetWriteDeadline(time.Now().Add(3 * time.Second))
		for range 160 {
			if ws.WriteMessage(websocket.BinaryMessage, chunk) != nil {
				break
			}
		}
		// The browser vanishes with a reset.
		_ = ws.UnderlyingConn().(*net.TCPConn).SetLinger(0)
		ws.UnderlyingConn().Close()
		waitFor(t, 3*time.Second, "the session's end", func() bool {
			return strings.Contains(tc.logs(), `"reason":"vnc server stopped reading"`) ||
				strings.Contains(tc.logs(), `"reason":"browser connection lost"`)
		})
	})

	t.Run("the browser stops reading and sends pongs", func(t *testing.T) {
		ws := streamingConsole(t, tc.url("/websockify?token=stream"), 1<<40, smallWindow)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if ws.WriteControl(websocket.PongMessage, nil, time.Now().Add(time.Second)) != nil {
					return
				}
			}
		}()
		waitFor(t, 3*time.Second, "the session's end", func() bool {
			return strings.Contains(tc.logs(), `"reason":"browser stopped reading"`)
		})
	})
	waitSessionGoroutines(t)
}

// TestSplicePipesClosed: pipes of sessions that end mid-stream are closed
// when the session ends, not at a later garbage collection.
func TestSplicePipesClosed(t *testing.T) {
	countPipes := func() int {
		entries, _ := os.ReadDir("/proc/self/fd")
		n := 0
		for _, e := range entries {
			if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(l, "pipe:") {
				n++
			}
		}
		return n
	}
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("needs /proc")
	}
	addr, _ := startLoadTarget(t)
	tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr)))
	// No garbage collection may close what the proxy left open.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	before := countPipes()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 25 {
				ws := streamingConsole(t, tc.url("/websockify?token="+secretToken), 1<<40, nil)
				for range 4 {
					if _, _, err := ws.ReadMessage(); err != nil {
						t.Error(err)
						return
					}
				}
				// Gone mid-stream: the session's pipe may hold bytes.
				_ = ws.UnderlyingConn().(*net.TCPConn).SetLinger(0)
				ws.Close()
			}
		})
	}
	wg.Wait()
	waitSessionGoroutines(t)
	// The proxy keeps up to 16 empty pipes for the next messages.
	if n := countPipes(); n > before+2*16 {
		t.Fatalf("%d pipe descriptors open after 200 sessions ended, %d before", n, before)
	}
}

// TestShutdownWithStuckBrowsers: SIGTERM to the real binary with 30
// browsers that read nothing and 100 healthy consoles: every healthy
// console gets its 1001 within about one close grace, and Caddy exits.
func TestShutdownWithStuckBrowsers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	addr, _ := startLoadTarget(t)
	dir := t.TempDir()
	site, proc := startCaddyProcess(t, dir, fmt.Sprintf("vnc_proxy /websockify {\n\t\tresolver file %s\n\t}",
		writeTokenFile(t, dir, secretToken+": "+addr)))
	url := "ws://" + site + "/websockify?token=" + secretToken
	smallWindow := smallWindowDialer(4096)
	for range 30 {
		streamingConsole(t, url, 1<<40, smallWindow) // never read again
	}
	healthy := make([]*websocket.Conn, 100)
	for i := range healthy {
		ws := mustDialWS(t, url)
		_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte{'e'}); err != nil {
			t.Fatal(err)
		}
		healthy[i] = ws
	}
	time.Sleep(500 * time.Millisecond) // the stuck browsers' windows fill

	start := time.Now()
	if err := proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	late := make(chan string, len(healthy))
	for i, ws := range healthy {
		wg.Go(func() {
			err := readUntilClose(ws)
			if d := time.Since(start); closeCode(err) != websocket.CloseGoingAway || d > 2500*time.Millisecond {
				late <- fmt.Sprintf("console %d: %v after %v", i, err, d)
			}
		})
	}
	wg.Wait()
	close(late)
	var problems []string
	for p := range late {
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		t.Errorf("%d of 100 healthy consoles did not get 1001 within 2.5s, e.g. %s", len(problems), problems[0])
	}
	select {
	case <-proc.Done():
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Caddy exited %v after SIGTERM", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("caddy did not exit 15s after SIGTERM")
	}
}

// startCaddyProcess builds cmd/caddy and runs it with one plain-HTTP site
// whose body is siteBody, admin off; it returns the site's address and the
// process.
func startCaddyProcess(t *testing.T, dir, siteBody string) (string, *testenv.Process) {
	t.Helper()
	return startCaddyProcessAdmin(t, dir, "off", siteBody)
}

// caddyfileFor is the Caddyfile startCaddyProcessAdmin runs.
func caddyfileFor(dir, admin string, port int, siteBody string) string {
	return fmt.Sprintf("{\n\tadmin %s\n\tskip_install_trust\n\tstorage file_system %s/storage\n\tlog {\n\t\toutput file %s/caddy.log\n\t\tformat json\n\t}\n}\n\nhttp://127.0.0.1:%d {\n\t%s\n}\n", admin, dir, dir, port, siteBody)
}

// startCaddyProcessAdmin is startCaddyProcess with the admin endpoint at
// admin ("off", or an address).
func startCaddyProcessAdmin(t *testing.T, dir, admin, siteBody string) (string, *testenv.Process) {
	t.Helper()
	return startCaddyProcessWith(t, dir, caddyProcess{admin: admin}, siteBody)
}

// caddyProcess is how startCaddyProcessWith runs the real binary.
type caddyProcess struct {
	admin string // "off" (the default), or the admin endpoint's address
	// https serves the site over HTTPS (tls internal) with Caddy's default
	// protocols, h1 h2 h3.
	https bool
	// xconnect runs Caddy with GODEBUG=http2xconnect=1, so that Go's
	// HTTP/2 server offers extended CONNECT; without it, Caddy runs with
	// no GODEBUG, as operators run it.
	xconnect bool
	// global holds more global options (HTTPS sites only).
	global string
}

// caddyfile is the Caddyfile for a site on port with siteBody.
func (c caddyProcess) caddyfile(dir string, port int, siteBody string) string {
	if !c.https {
		return caddyfileFor(dir, c.admin, port, siteBody)
	}
	return fmt.Sprintf("{\n\tadmin %s\n\tskip_install_trust\n\tlocal_certs\n\tauto_https disable_redirects\n\t%s\n\tstorage file_system %s/storage\n\tlog {\n\t\toutput file %s/caddy.log\n\t\tformat json\n\t}\n}\n\nhttps://127.0.0.1:%d {\n\t%s\n}\n", c.admin, c.global, dir, dir, port, siteBody)
}

// reloadCaddyProcess loads a config with siteBody into the process at site
// (started as c says, in dir) through its admin endpoint: a reload.
func reloadCaddyProcess(t *testing.T, c caddyProcess, dir, site, siteBody string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(site)
	portN, _ := strconv.Atoi(port)
	if status, body := adminCall(t, http.MethodPost, "http://"+c.admin+"/load", c.caddyfile(dir, portN, siteBody)); status != http.StatusOK {
		t.Fatalf("reload: %d %s", status, body)
	}
}

// startCaddyProcessWith builds cmd/caddy and runs it as c says, with one
// site whose body is siteBody; it returns the site's address and the
// process.
func startCaddyProcessWith(t *testing.T, dir string, c caddyProcess, siteBody string) (string, *testenv.Process) {
	t.Helper()
	if c.admin == "" {
		c.admin = "off"
	}
	goBin := testenv.Require(t, "go", "golang")
	caddyBin := filepath.Join(dir, "caddy")
	build := exec.Command(goBin, "build", "-o", caddyBin, "../cmd/caddy")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cmd/caddy: %v\n%s", err, out)
	}
	port := testenv.FreePort(t)
	cf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cf, []byte(c.caddyfile(dir, port, siteBody)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	// The tests themselves run with http2xconnect (TestMain).
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") })
	if c.xconnect {
		env = append(env, "GODEBUG=http2xconnect=1")
	}
	proc := testenv.StartEnv(t, env, caddyBin, "run", "--config", cf, "--adapter", "caddyfile")
	site := fmt.Sprintf("127.0.0.1:%d", port)
	if err := testenv.WaitDial("tcp", site, 15*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, proc.Output())
	}
	return site, proc
}

// TestDialAndGreetingOneDeadline: dial_timeout bounds the dial and the
// greeting together, and a browser that leaves ends the wait.
func TestDialAndGreetingOneDeadline(t *testing.T) {
	// A listener with a backlog of one that accepts late: the proxy's
	// first SYN is dropped and its retransmission, about a second later,
	// gets through; then the server says nothing.
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "slow listener")
	slow, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slow.Close() })
	slowAddr := slow.Addr().String()
	// Fill the accept queue.
	for range 2 {
		c, err := net.DialTimeout("tcp", slowAddr, 200*time.Millisecond)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	held := make(chan net.Conn, 16)
	t.Cleanup(func() {
		for len(held) > 0 {
			(<-held).Close()
		}
	})
	go func() {
		time.Sleep(300 * time.Millisecond)
		for {
			c, err := slow.Accept()
			if err != nil {
				return
			}
			held <- c // silent
		}
	}()

	// A server that accepts at once, never greets, and reports when the
	// proxy hangs up.
	silent := listenLoopback(t)
	hungUp := make(chan time.Time, 4)
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = c.Read(make([]byte, 1))
				hungUp <- time.Now()
				c.Close()
			}()
		}
	}()

	tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(), "slow: "+slowAddr, "silent: "+silent.Addr().String()), "dial_timeout 1500ms"))

	t.Run("slow dial, then silence: 502 within dial_timeout", func(t *testing.T) {
		start := time.Now()
		_, status, _ := dialWS(t, tc.url("/websockify?token=slow"), nil)
		d := time.Since(start)
		if status != 502 {
			t.Fatalf("status %d, want 502", status)
		}
		if d > 2*time.Second {
			t.Errorf("502 after %v with dial_timeout 1.5s", d)
		}
	})

	t.Run("the browser leaves: the wait for the greeting ends", func(t *testing.T) {
		conn, err := net.Dial("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(conn, "GET /websockify?token=silent HTTP/1.1\r\nHost: "+tc.addr+
			"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		time.Sleep(200 * time.Millisecond)
		left := time.Now()
		conn.Close()
		select {
		case at := <-hungUp:
			if d := at.Sub(left); d > 700*time.Millisecond {
				t.Errorf("the proxy hung up on the VNC server %v after the browser left", d)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("the proxy still waits for the greeting 3s after the browser left")
		}
	})
}

// TestExitAfterReloadWithoutHandler: a console that survived a reload to a
// config without vnc_proxy still gets close 1001 when Caddy exits.
func TestExitAfterReloadWithoutHandler(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	addr, _ := startLoadTarget(t)
	dir := t.TempDir()
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	site, proc := startCaddyProcessAdmin(t, dir, admin, fmt.Sprintf("vnc_proxy /websockify {\n\t\tresolver file %s\n\t}",
		writeTokenFile(t, dir, secretToken+": "+addr)))
	ws := mustDialWS(t, "ws://"+site+"/websockify?token="+secretToken)
	if _, _, err := ws.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte{'e'}); err != nil {
		t.Fatal(err)
	}

	reloadCaddyProcess(t, caddyProcess{admin: admin}, dir, site, "respond \"no consoles here\"")
	// The console is still alive across the reload.
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "ping" {
		t.Fatalf("after the reload: %q, %v", msg, err)
	}

	if err := proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := readUntilClose(ws); closeCode(err) != websocket.CloseGoingAway {
		t.Fatalf("on exit the console got %v, want close 1001", err)
	}
}

// TestReadingBrowserStaysUp: a browser busy receiving a stream need not
// answer pings (they may not even be sent, waiting for no data frame):
// taking the bytes shows it is alive. An idle one that ignores pings is
// still dropped.
func TestReadingBrowserStaysUp(t *testing.T) {
	addr, _ := startLoadTarget(t)
	tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr), "ping_interval 200ms"))
	url := tc.url("/websockify?token=" + secretToken)

	ws := streamingConsole(t, url, 1<<40, nil)
	ws.SetPingHandler(func(string) error { return nil }) // never a pong
	end := time.Now().Add(2 * time.Second)               // ten ping intervals
	for time.Now().Before(end) {
		if _, _, err := ws.NextReader(); err != nil {
			t.Fatalf("a browser taking the stream was dropped: %v", err)
		}
	}
	ws.Close()

	idle := mustDialWS(t, url)
	idle.SetPingHandler(func(string) error { return nil })
	if _, _, err := idle.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	if err := idle.WriteMessage(websocket.BinaryMessage, []byte{'i'}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = idle.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, _, err := idle.ReadMessage(); err == nil || time.Since(start) > 1500*time.Millisecond {
		t.Fatalf("an idle browser that ignores pings: %v after %v, want dropped within about 3 intervals", err, time.Since(start))
	}
}

// TestSlowBrowserGetsTheTail: when the VNC server closes right after
// sending, a browser that reads its backlog slowly (a phone on a slow
// link) still gets every byte and then the close frame, however long past
// the close grace that takes, as long as it keeps reading.
func TestSlowBrowserGetsTheTail(t *testing.T) {
	addr, _ := startLoadTarget(t)
	tc := startCaddy(t, fileSite(writeTokenFile(t, t.TempDir(), secretToken+": "+addr)))
	slow := smallWindowDialer(16 << 10)
	const n = 6 << 20
	ws := streamingConsole(t, tc.url("/websockify?token="+secretToken), n, slow)
	var got int64
	start := time.Now()
	for {
		_, r, err := ws.NextReader()
		if err != nil {
			if closeCode(err) != websocket.CloseNormalClosure || got != n {
				t.Fatalf("after %d of %d bytes, %v: %v", got, n, time.Since(start).Round(time.Millisecond), err)
			}
			break
		}
		k, err := io.Copy(io.Discard, r)
		if err != nil {
			t.Fatalf("after %d of %d bytes: %v", got, n, err)
		}
		got += k
		time.Sleep(time.Duration(k) * time.Second / (2 << 20)) // about 2 MB/s
	}
	if d := time.Since(start); d < 2*console.CloseGrace {
		t.Fatalf("read in %v: not slow enough to test the grace", d)
	}
}
