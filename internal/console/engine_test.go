package console_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
)

// relayCase is one way the engine's relay runs: the transport, and
// whether the VNC server's connection is a socket it can splice from.
type relayCase struct {
	name       string
	transport  string
	hideSocket bool
	copyOnly   bool
}

var relayCases = []relayCase{
	{name: "ws splice", transport: overWS},
	{name: "ws copy", transport: overWS, copyOnly: true},
	{name: "ws socketless target", transport: overWS, hideSocket: true},
	{name: "wss", transport: overWSS},
	{name: "h2", transport: overH2},
}

// TestRelayBothWays: every byte reaches the other side in order, the VNC
// server's greeting first; the counts, the metrics and the admin list
// agree; the VNC server's end is the browser's close 1000, after all its
// bytes; Release runs once and nothing is left.
func TestRelayBothWays(t *testing.T) {
	for _, c := range relayCases {
		t.Run(c.name, func(t *testing.T) {
			if c.copyOnly {
				console.CopyRelayOnly.Store(true)
				t.Cleanup(func() { console.CopyRelayOnly.Store(false) })
			}
			testRelay(t, c)
		})
	}
}

func testRelay(t *testing.T, c relayCase) {
	rng := rand.New(rand.NewPCG(1, uint64(len(c.name))))
	payload := make([]byte, 3<<20+12345)
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	// What the browser sends, in messages of every size class: empty,
	// small, a frame header of 2 and 8 bytes, larger than a relay buffer.
	var messages [][]byte
	for _, n := range []int{1, 0, 125, 126, 65535, 65536, 200000, 7, 1 << 20} {
		m := make([]byte, n)
		for i := range m {
			m[i] = byte(rng.Uint32())
		}
		messages = append(messages, m)
	}
	upward := bytes.Join(messages, nil)

	sums := make(chan [32]byte, 1)
	hangUp := make(chan struct{})
	addr := startTarget(t, func(conn net.Conn, done <-chan struct{}) {
		if _, err := io.WriteString(conn, greeting); err != nil {
			return
		}
		go func() { _, _ = conn.Write(payload) }()
		h := sha256.New()
		if _, err := io.CopyN(h, conn, int64(len(upward))); err != nil {
			return
		}
		sums <- [32]byte(h.Sum(nil))
		select {
		case <-hangUp:
		case <-done:
		}
	})
	r := newRig(t, rigOptions{transport: c.transport, target: addr, prepare: readGreeting, hideSocket: c.hideSocket})
	ws, s := r.open()

	received := make(chan []byte, 1)
	go func() {
		stream := wsstream.New(ws)
		got := make([]byte, len(greeting)+len(payload))
		n, _ := io.ReadFull(stream, got)
		received <- got[:n]
	}()
	for _, m := range messages {
		if err := ws.WriteMessage(websocket.BinaryMessage, m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case sum := <-sums:
		if sum != sha256.Sum256(upward) {
			t.Fatal("the VNC server got other bytes than the browser sent")
		}
	case <-time.After(wait):
		t.Fatal("the VNC server did not get the browser's bytes")
	}
	select {
	case got := <-received:
		if string(got[:min(len(got), len(greeting))]) != greeting {
			t.Fatalf("the browser got %q first, want the greeting", got[:min(len(got), 12)])
		}
		if sha256.Sum256(got[len(greeting):]) != sha256.Sum256(payload) {
			t.Fatalf("the browser got %d bytes, other than the %d the VNC server sent", len(got)-len(greeting), len(payload))
		}
	case <-time.After(wait):
		t.Fatal("the browser did not get the VNC server's bytes")
	}

	toBrowser, toTarget := int64(len(greeting)+len(payload)), int64(len(upward))
	waitFor(t, "the counts", func() bool {
		i := s.Info()
		return i.BytesToBrowser == toBrowser && i.BytesToTarget == toTarget
	})
	if got := console.Sessions.List(); len(got) != 1 || got[0].ID != s.ID() {
		t.Fatalf("the admin list is %+v, want the one session", got)
	}
	if console.Sessions.Find(s.ID()) != s {
		t.Fatal("Find does not find the live session")
	}
	if r.metrics.active.n.Load() != 1 {
		t.Fatalf("active gauge %d, want 1", r.metrics.active.n.Load())
	}

	close(hangUp)
	expectClose(t, ws, websocket.CloseNormalClosure, "VNC server closed the connection")
	r.waitReleased(s.ID())
	if reason := r.endReason(s.ID()); reason != "vnc server closed" {
		t.Errorf("ended for %q", reason)
	}
	if got, want := r.metrics.toBrowser.n.Load(), toBrowser; got != want {
		t.Errorf("bytes to browser counted %d, want %d", got, want)
	}
	if got, want := r.metrics.toTarget.n.Load(), toTarget; got != want {
		t.Errorf("bytes to target counted %d, want %d", got, want)
	}
	waitFor(t, "the session to leave the registry", func() bool { return console.Sessions.Find(s.ID()) == nil })
	if r.metrics.active.n.Load() != 0 || r.metrics.durations.n.Load() != 1 {
		t.Errorf("active %d, durations %d after the end, want 0 and 1", r.metrics.active.n.Load(), r.metrics.durations.n.Load())
	}
}

// TestCloseCodes: how each end of a console reaches the browser.
func TestCloseCodes(t *testing.T) {
	// Raw frames from the browser, masked with a zero key.
	masked := func(first byte, payload []byte) []byte {
		b := []byte{first, 0x80 | byte(len(payload)), 0, 0, 0, 0}
		return append(b, payload...)
	}
	cases := []struct {
		name   string
		send   func(ws *websocket.Conn) error
		code   int
		text   string
		reason string
	}{
		{
			name: "browser closes",
			send: func(ws *websocket.Conn) error {
				return ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"), time.Now().Add(wait))
			},
			code: 4001, text: "", reason: "browser closed",
		},
		{
			name: "browser closes without a code",
			send: func(ws *websocket.Conn) error {
				return ws.WriteControl(websocket.CloseMessage, nil, time.Now().Add(wait))
			},
			code: websocket.CloseNoStatusReceived, text: "", reason: "browser closed",
		},
		{
			name: "oversized message",
			send: func(ws *websocket.Conn) error { return ws.WriteMessage(websocket.BinaryMessage, make([]byte, 2048)) },
			code: websocket.CloseMessageTooBig, text: "*", reason: "message too big",
		},
		{
			name: "text message",
			send: func(ws *websocket.Conn) error { return ws.WriteMessage(websocket.TextMessage, []byte("hello")) },
			code: websocket.CloseUnsupportedData, text: "only binary messages are accepted", reason: "text message refused",
		},
		{
			name: "reserved bits",
			send: func(ws *websocket.Conn) error {
				_, err := ws.UnderlyingConn().Write(masked(0x80|0x40|websocket.BinaryMessage, nil))
				return err
			},
			code: websocket.CloseProtocolError, text: "*",
		},
		{
			name: "unmasked frame",
			send: func(ws *websocket.Conn) error {
				_, err := ws.UnderlyingConn().Write([]byte{0x80 | websocket.BinaryMessage, 1, 'x'})
				return err
			},
			code: websocket.CloseProtocolError, text: "*",
		},
		{
			name: "frame length with the top bit set",
			send: func(ws *websocket.Conn) error {
				b := []byte{0x80 | websocket.BinaryMessage, 0x80 | 127}
				b = binary.BigEndian.AppendUint64(b, 1<<63|5)
				_, err := ws.UnderlyingConn().Write(append(b, 0, 0, 0, 0))
				return err
			},
			code: websocket.CloseProtocolError, text: "invalid frame length", reason: "websocket protocol error",
		},
	}
	for _, transport := range []string{overWS, overH2} {
		t.Run(transport, func(t *testing.T) {
			addr := quietTarget(t)
			r := newRig(t, rigOptions{transport: transport, target: addr, prepare: readGreeting, config: func(c *console.Config) {
				c.MaxMessageSize = 1024
			}})
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					ws, s := r.open()
					if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != greeting {
						t.Fatalf("greeting %q, %v", msg, err)
					}
					if err := c.send(ws); err != nil {
						t.Fatal(err)
					}
					expectClose(t, ws, c.code, c.text)
					r.waitReleased(s.ID())
					if reason := r.endReason(s.ID()); c.reason != "" && reason != c.reason {
						t.Errorf("ended for %q, want %q", reason, c.reason)
					}
				})
			}
		})
	}
}

// TestPings: the browser is pinged every interval and stays while it
// answers.
func TestPings(t *testing.T) {
	for _, transport := range []string{overWS, overH2} {
		t.Run(transport, func(t *testing.T) {
			r := newRig(t, rigOptions{transport: transport, target: echoTarget(t), prepare: readGreeting, config: func(c *console.Config) {
				c.PingInterval = 500 * time.Millisecond
			}})
			ws, s := r.open()
			pings := make(chan struct{}, 100)
			ws.SetPingHandler(func(data string) error {
				pings <- struct{}{}
				return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(wait))
			})
			ended := make(chan error, 1)
			go func() {
				_, err := closeOf(t, ws)
				ended <- err
			}()
			for range 3 {
				select {
				case <-pings:
				case err := <-ended:
					t.Fatalf("the console ended while the browser answered pings: %v (reason %q)", err, r.endReason(s.ID()))
				case <-time.After(wait):
					t.Fatal("no ping")
				}
			}
			if console.Sessions.Find(s.ID()) == nil {
				t.Fatalf("the session ended (%q)", r.endReason(s.ID()))
			}
			ws.Close()
			<-ended
			r.waitReleased(s.ID())
		})
	}
}

// TestBrowserPing: the browser's ping gets a pong with its data. The
// proxy's own pings are off, and the greeting is read first: a browser's
// ping that comes while another frame (a data frame, or the proxy's own
// ping) is being written goes unanswered.
func TestBrowserPing(t *testing.T) {
	for _, transport := range []string{overWS, overH2} {
		t.Run(transport, func(t *testing.T) {
			r := newRig(t, rigOptions{transport: transport, target: echoTarget(t), prepare: readGreeting, config: func(c *console.Config) {
				c.PingInterval = 0
			}})
			ws, s := r.open()
			// A ping that comes while the greeting is written goes
			// unanswered too.
			if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != greeting {
				t.Fatalf("greeting %q, %v", msg, err)
			}
			// The count follows the write's end: the relay no longer
			// holds the browser's connection.
			waitFor(t, "the greeting's count", func() bool { return s.Info().BytesToBrowser == int64(len(greeting)) })
			pongs := make(chan string, 10)
			ws.SetPongHandler(func(data string) error {
				pongs <- data
				return nil
			})
			ended := make(chan error, 1)
			go func() {
				_, err := closeOf(t, ws)
				ended <- err
			}()
			for i := range 5 {
				data := fmt.Sprintf("are you there %d", i)
				if err := ws.WriteControl(websocket.PingMessage, []byte(data), time.Now().Add(wait)); err != nil {
					t.Fatal(err)
				}
				select {
				case got := <-pongs:
					if got != data {
						t.Errorf("pong %q, want the ping's data %q", got, data)
					}
				case <-time.After(wait):
					t.Fatal("the browser's ping was not answered")
				}
			}
			ws.Close()
			<-ended
			r.waitReleased(s.ID())
		})
	}
}

// TestPingTimeout: a browser that answers nothing, with nothing to read,
// is dropped after two ping intervals, without a close frame (it could not
// take one).
func TestPingTimeout(t *testing.T) {
	for _, transport := range []string{overWS, overH2} {
		t.Run(transport, func(t *testing.T) {
			r := newRig(t, rigOptions{transport: transport, target: quietTarget(t), prepare: readGreeting, config: func(c *console.Config) {
				c.PingInterval = 100 * time.Millisecond
			}})
			ws, s := r.open()
			// The browser reads nothing, so it answers no ping.
			r.waitReleased(s.ID())
			if reason := r.endReason(s.ID()); reason != "browser did not answer pings" {
				t.Fatalf("ended for %q", reason)
			}
			if ce, err := closeOf(t, ws); ce != nil {
				t.Fatalf("got close %d after the ping timeout (%v), want none", ce.Code, err)
			}
		})
	}
}

// TestIdleTimeout: no bytes either way for IdleTimeout ends the console
// with close 1000 "idle timeout", not before.
func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	r := newRig(t, rigOptions{transport: overWS, target: quietTarget(t), prepare: readGreeting, config: func(c *console.Config) {
		c.IdleTimeout = idle
	}})
	// Before the session starts, so that the silence measured here is
	// no longer than the session's own.
	start := time.Now()
	ws, s := r.open()
	expectClose(t, ws, websocket.CloseNormalClosure, "idle timeout")
	if d := time.Since(start); d < idle {
		t.Errorf("ended after %v of silence, before idle_timeout %v", d, idle)
	}
	r.waitReleased(s.ID())
	if reason := r.endReason(s.ID()); reason != "idle timeout" {
		t.Errorf("ended for %q", reason)
	}
}

// TestEndAt: a console ends by itself at EndAt, with close 1008 and
// EndReason.
func TestEndAt(t *testing.T) {
	for _, transport := range []string{overWS, overH2} {
		t.Run(transport, func(t *testing.T) {
			endAt := time.Now().Add(400 * time.Millisecond)
			r := newRig(t, rigOptions{transport: transport, target: echoTarget(t), prepare: readGreeting, config: func(c *console.Config) {
				c.EndAt, c.EndReason = endAt, "session time limit"
			}})
			ws, s := r.open()
			expectClose(t, ws, websocket.ClosePolicyViolation, "session time limit")
			if time.Now().Before(endAt) {
				t.Error("the console ended before EndAt")
			}
			r.waitReleased(s.ID())
			if reason := r.endReason(s.ID()); reason != "session time limit" {
				t.Errorf("ended for %q", reason)
			}
		})
	}
}

// TestBrowserStopsReading: a browser that stops reading while the VNC
// server streams, but keeps its connection alive with pongs, is dropped by
// the stall check within a few ping intervals.
func TestBrowserStopsReading(t *testing.T) {
	for _, transport := range []string{overWS, overH2} {
		t.Run(transport, func(t *testing.T) {
			addr := startTarget(t, func(c net.Conn, _ <-chan struct{}) {
				if _, err := io.WriteString(c, greeting); err != nil {
					return
				}
				chunk := bytes.Repeat([]byte("framebuffer "), 5000)
				for {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			})
			r := newRig(t, rigOptions{transport: transport, target: addr, prepare: readGreeting, clientReadBuffer: 4096, config: func(c *console.Config) {
				c.PingInterval = 300 * time.Millisecond
			}})
			ws, s := r.open()
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
			r.waitReleased(s.ID())
			if reason := r.endReason(s.ID()); reason != "browser stopped reading" {
				t.Fatalf("ended for %q, want the stall check's end", reason)
			}
		})
	}
}

// TestVNCServerStopsReading: a VNC server that stops reading what the
// browser sends, quiet or still sending updates, is dropped by the stall
// check: the browser gets close 1000.
func TestVNCServerStopsReading(t *testing.T) {
	for _, updates := range []bool{false, true} {
		t.Run(map[bool]string{false: "quiet", true: "sending updates"}[updates], func(t *testing.T) {
			addr := startTarget(t, func(c net.Conn, done <-chan struct{}) {
				_ = c.(*net.TCPConn).SetReadBuffer(4096)
				if _, err := io.WriteString(c, greeting); err != nil {
					return
				}
				for {
					select {
					case <-done:
						return
					case <-time.After(20 * time.Millisecond):
					}
					if !updates {
						continue
					}
					if _, err := c.Write([]byte("update")); err != nil {
						return
					}
				}
			})
			r := newRig(t, rigOptions{transport: overWS, target: addr, prepare: readGreeting, config: func(c *console.Config) {
				c.PingInterval = 200 * time.Millisecond
			}})
			ws, s := r.open()
			go func() {
				chunk := make([]byte, 64<<10)
				_ = ws.SetWriteDeadline(time.Now().Add(wait))
				for range 1000 {
					if ws.WriteMessage(websocket.BinaryMessage, chunk) != nil {
						return
					}
				}
			}()
			ce, err := closeOf(t, ws)
			r.waitReleased(s.ID())
			reason := r.endReason(s.ID())
			if !updates && reason == "browser did not answer pings" {
				// While its write waits, the relay reads nothing from the
				// browser, pongs included; with nothing moving to the
				// browser either, a ping timeout may come first when the
				// stall check's ticks run late.
				t.Logf("ended by the ping timeout (%v)", err)
				return
			}
			if ce == nil || ce.Code != websocket.CloseNormalClosure || ce.Text != "VNC server not responding" {
				t.Fatalf("ended for %q with %v, want close 1000 \"VNC server not responding\"", reason, err)
			}
			if reason != "vnc server stopped reading" {
				t.Errorf("ended for %q", reason)
			}
		})
	}
}

// TestBrowserVanishes: a browser gone without a close frame ends the
// console and its VNC server connection.
func TestBrowserVanishes(t *testing.T) {
	closed := make(chan struct{}, 1)
	addr := startTarget(t, func(c net.Conn, _ <-chan struct{}) {
		if _, err := io.WriteString(c, greeting); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
		closed <- struct{}{}
	})
	r := newRig(t, rigOptions{transport: overWS, target: addr, prepare: readGreeting})
	ws, s := r.open()
	ws.UnderlyingConn().Close()
	select {
	case <-closed:
	case <-time.After(wait):
		t.Fatal("the VNC server's connection stayed open")
	}
	r.waitReleased(s.ID())
	if reason := r.endReason(s.ID()); reason != "browser connection lost" {
		t.Errorf("ended for %q", reason)
	}
}

// TestConcurrentEnds: every way of ending a console at once ends it once:
// no panic, one Release, one end line, nothing left.
func TestConcurrentEnds(t *testing.T) {
	for _, transport := range []string{overWS, overH2} {
		t.Run(transport, func(t *testing.T) {
			r := newRig(t, rigOptions{transport: transport, target: echoTarget(t), prepare: readGreeting})
			for i := range 8 {
				ws, s := r.open()
				go func() { _, _ = closeOf(t, ws) }()
				var all sync.WaitGroup
				start := make(chan struct{})
				ends := []func(){
					func() { console.Sessions.CloseAll(websocket.CloseGoingAway, "server shutting down") },
					func() {
						console.Sessions.EndMatching(func(x *console.Session) bool { return x.ID() == s.ID() }, console.ReasonByAdmin)
					},
					func() {
						_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
					},
					func() { _ = ws.WriteMessage(websocket.BinaryMessage, []byte("more")) },
					func() { console.Sessions.List(); console.Sessions.Find(s.ID()) },
				}
				if i%2 == 1 {
					ends = append(ends, func() { ws.UnderlyingConn().Close() })
				}
				for _, end := range ends {
					all.Go(func() {
						<-start
						end()
					})
				}
				close(start)
				all.Wait()
				r.waitReleased(s.ID())
				r.endReason(s.ID())
			}
			waitFor(t, "the sessions' ends", func() bool { return console.Sessions.Len() == 0 })
			if n := r.logs.FilterMessage("session ended").Len(); n != 8 {
				t.Errorf("%d end lines for 8 sessions", n)
			}
		})
	}
}

// TestStartOnClosedConnection: Start refuses a browser connection that
// is gone already: it closes the VNC server's connection, registers
// nothing, and Release does not run.
func TestStartOnClosedConnection(t *testing.T) {
	closed := make(chan struct{}, 1)
	addr := startTarget(t, func(c net.Conn, _ <-chan struct{}) {
		_, _ = io.Copy(io.Discard, c)
		closed <- struct{}{}
	})
	r := newRig(t, rigOptions{transport: overWS, target: addr, beforeStart: func(ws *websocket.Conn) {
		ws.NetConn().Close()
	}})
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(r.srv.URL, "http")+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	select {
	case err := <-r.startErrs:
		if err == nil {
			t.Fatal("Start took a closed connection")
		}
	case <-time.After(wait):
		t.Fatal("Start did not return")
	}
	select {
	case <-closed:
	case <-time.After(wait):
		t.Fatal("the VNC server's connection stayed open")
	}
	if n := console.Sessions.Len(); n != 0 {
		t.Fatalf("%d sessions registered", n)
	}
	r.mu.Lock()
	n := len(r.releases)
	r.mu.Unlock()
	if n != 0 {
		t.Fatal("Release ran for a session that never started")
	}
}
