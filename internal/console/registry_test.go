package console_test

import (
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
)

// TestRegistry: the process's live consoles are listed, found and ended
// by what an administrator names; on exit, every one gets 1001.
func TestRegistry(t *testing.T) {
	expires := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	var n atomic.Int32
	r := newRig(t, rigOptions{transport: overWS, target: echoTarget(t), prepare: readGreeting, config: func(c *console.Config) {
		i := n.Add(1)
		// Consoles 1 and 3 share a token.
		c.TokenHash = fmt.Sprintf("%012d", i%2)
		c.Target = fmt.Sprintf("tcp:10.0.0.%d:5901", i)
		c.Server = fmt.Sprintf("srv%d", i)
		if i == 1 {
			c.ExpiresAt = expires
		}
	}})
	var ws [3]*websocket.Conn
	var s [3]*console.Session
	for i := range 3 {
		ws[i], s[i] = r.open()
		if _, msg, err := ws[i].ReadMessage(); err != nil || string(msg) != greeting {
			t.Fatalf("greeting %q, %v", msg, err)
		}
	}

	// The count follows the write, which the browser may see first.
	waitFor(t, "the greetings' counts", func() bool {
		for _, x := range s {
			if x.Info().BytesToBrowser != int64(len(greeting)) {
				return false
			}
		}
		return true
	})
	list := console.Sessions.List()
	if len(list) != 3 {
		t.Fatalf("listed %d consoles, want 3", len(list))
	}
	// Oldest first, by the millisecond, then by id.
	for i := 1; i < len(list); i++ {
		a, b := list[i-1], list[i]
		if c := a.Started.Compare(b.Started); c > 0 || c == 0 && a.ID > b.ID {
			t.Errorf("list %d (%v %s) before list %d (%v %s)", i-1, a.Started, a.ID, i, b.Started, b.ID)
		}
	}
	byID := map[string]console.Info{}
	for _, info := range list {
		byID[info.ID] = info
	}
	for i := range s {
		info, ok := byID[s[i].ID()]
		if !ok {
			t.Fatalf("console %d is not listed", i+1)
		}
		if info.Server != fmt.Sprintf("srv%d", i+1) || info.Target != s[i].Target() || info.TokenHash != s[i].TokenHash() ||
			info.Client == "" || info.Started.IsZero() || info.ViewOnly || info.BytesToBrowser != int64(len(greeting)) {
			t.Errorf("console %d listed as %+v", i+1, info)
		}
	}
	if at := byID[s[0].ID()].ExpiresAt; at == nil || !at.Equal(expires) || at.Location() != time.UTC {
		t.Errorf("expires_at %v, want %v in UTC", at, expires)
	}
	if at := byID[s[1].ID()].ExpiresAt; at != nil {
		t.Errorf("expires_at %v for a token without expiry", at)
	}
	if console.Sessions.Find(s[1].ID()) != s[1] || console.Sessions.Find("no-such-id") != nil {
		t.Fatal("Find does not find by id")
	}

	// Close requests name consoles by token hash, target, or both.
	matches := []struct {
		body string
		want [3]bool
	}{
		{`{"token_hash": "000000000001"}`, [3]bool{true, false, true}},
		{`{"token_hash": " 000000000001 "}`, [3]bool{true, false, true}},
		{`{"target": "10.0.0.2:5901"}`, [3]bool{false, true, false}},
		{`{"target": "tcp:10.0.0.3:5901"}`, [3]bool{false, false, true}},
		{`{"token_hash": "000000000001", "target": "10.0.0.3:5901"}`, [3]bool{false, false, true}},
		{`{"token_hash": "000000000000", "target": "10.0.0.3:5901"}`, [3]bool{false, false, false}},
		{`{"target": "unix:/run/vm.sock"}`, [3]bool{false, false, false}},
	}
	for _, m := range matches {
		req, err := console.ParseCloseRequest([]byte(m.body))
		if err != nil {
			t.Fatalf("%s: %v", m.body, err)
		}
		for i := range 3 {
			if got := req.Matches(s[i]); got != m.want[i] {
				t.Errorf("%s matches console %d: %v, want %v", m.body, i+1, got, m.want[i])
			}
		}
	}
	for _, bad := range []string{`{}`, `{"token": "x"}`, `{"target": 5}`, `{} {}`, `nope`} {
		if _, err := console.ParseCloseRequest([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}

	// An administrator ends console 2 by its target.
	req, _ := console.ParseCloseRequest([]byte(`{"target": "10.0.0.2:5901"}`))
	if n := console.Sessions.EndMatching(req.Matches, console.ReasonByAdmin); n != 1 {
		t.Fatalf("EndMatching ended %d consoles, want 1", n)
	}
	expectClose(t, ws[1], websocket.ClosePolicyViolation, console.ReasonByAdmin)
	r.waitReleased(s[1].ID())
	if reason := r.endReason(s[1].ID()); reason != console.ReasonByAdmin {
		t.Errorf("ended for %q", reason)
	}
	if n := console.Sessions.EndMatching(req.Matches, console.ReasonByAdmin); n != 0 {
		t.Errorf("EndMatching ended %d consoles that had ended already", n)
	}
	if console.Sessions.Find(s[1].ID()) != nil {
		t.Error("Find finds an ended console")
	}
	if got := console.Sessions.List(); len(got) != 2 {
		t.Errorf("listed %d consoles after one ended, want 2", len(got))
	}

	// The process exits: the others get 1001, and CloseAll returns once
	// they have ended.
	closes := make(chan *websocket.CloseError, 2)
	for _, i := range []int{0, 2} {
		go func() {
			ce, _ := closeOf(t, ws[i])
			closes <- ce
		}()
	}
	console.Sessions.CloseAll(websocket.CloseGoingAway, "server shutting down")
	if n := console.Sessions.Len(); n != 0 {
		t.Errorf("%d consoles live after CloseAll", n)
	}
	for range 2 {
		if ce := <-closes; ce == nil || ce.Code != websocket.CloseGoingAway || ce.Text != "server shutting down" {
			t.Errorf("got %v at exit, want close 1001", ce)
		}
	}
	for _, i := range []int{0, 2} {
		if reason := r.endReason(s[i].ID()); reason != "server shutting down" {
			t.Errorf("console %d ended for %q", i+1, reason)
		}
	}
}

// TestUnansweredClose: a browser that does not answer the close frame is
// dropped a grace period later, and the console ends.
func TestUnansweredClose(t *testing.T) {
	for _, transport := range []string{overWS, overWSS, overH2} {
		t.Run(transport, func(t *testing.T) {
			r := newRig(t, rigOptions{transport: transport, target: quietTarget(t), prepare: readGreeting})
			ws, s := r.open()
			// The browser reads nothing, so it never answers.
			if n := console.Sessions.EndMatching(func(x *console.Session) bool { return x == s }, console.ReasonByAdmin); n != 1 {
				t.Fatalf("EndMatching ended %d", n)
			}
			r.waitReleased(s.ID())
			// What it was sent is still there to read: the greeting, then
			// the close frame.
			expectClose(t, ws, websocket.ClosePolicyViolation, console.ReasonByAdmin)
		})
	}
}

// TestCloseAfterFrameInFlight: a close frame waits for the data frame
// being written to a browser that reads slowly, and reaches it after
// every byte before it, intact.
func TestCloseAfterFrameInFlight(t *testing.T) {
	for _, transport := range []string{overWS, overH2} {
		t.Run(transport, func(t *testing.T) {
			addr := startTarget(t, func(c net.Conn, _ <-chan struct{}) {
				if _, err := io.WriteString(c, greeting); err != nil {
					return
				}
				// A stream whose byte at offset k is k mod 251.
				chunk := make([]byte, 251*1000)
				for i := range chunk {
					chunk[i] = byte(i % 251)
				}
				for {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			})
			// A receive window below one loopback segment would make TCP
			// itself crawl.
			r := newRig(t, rigOptions{transport: transport, target: addr, prepare: readGreeting, clientReadBuffer: 64 << 10})
			ws, s := r.open()
			_ = ws.SetReadDeadline(time.Now().Add(wait))
			if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != greeting {
				t.Fatalf("greeting %q, %v", msg, err)
			}
			offset := 0
			check := func(msg []byte) {
				for i, b := range msg {
					if b != byte((offset+i)%251) {
						t.Fatalf("byte %d of the stream is %d, want %d", offset+i, b, (offset+i)%251)
					}
				}
				offset += len(msg)
			}
			for range 3 {
				_, msg, err := ws.ReadMessage()
				if err != nil {
					t.Fatal(err)
				}
				check(msg)
			}
			// The browser pauses: the relay's write blocks mid-frame.
			moved := s.Info().BytesToBrowser
			waitFor(t, "the relay to block", func() bool {
				time.Sleep(50 * time.Millisecond)
				now := s.Info().BytesToBrowser
				stuck := now == moved
				moved = now
				return stuck
			})
			ended := make(chan int, 1)
			go func() {
				ended <- console.Sessions.EndMatching(func(x *console.Session) bool { return x == s }, console.ReasonByAdmin)
			}()
			// It reads on: the frame in flight completes, then the close.
			for {
				_, msg, err := ws.ReadMessage()
				if err != nil {
					if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
						t.Fatalf("after %d bytes: %v, want close 1008", offset, err)
					}
					break
				}
				check(msg)
			}
			if n := <-ended; n != 1 {
				t.Errorf("EndMatching ended %d", n)
			}
			r.waitReleased(s.ID())
		})
	}
}
