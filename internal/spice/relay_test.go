package spice

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// relay is a TCP proxy in front of a SPICE server shaped as a console
// proxy's relay would be: per channel, one goroutine copies the client's
// bytes through a ClientStream, another the server's through a
// ServerStream, which tells the first when a display channel has started.
// When the client leaves, the server's side is closed as Finish says.
type relay struct {
	t      testing.TB
	ln     net.Listener
	target string
	mu     sync.Mutex
	links  []Link    // the links seen, in order
	errs   []error   // what the streams refused
	closes []closing // how each channel's server side was closed
}

type closing struct {
	link   Link
	waited bool
	err    error
}

func startRelay(t testing.TB, target string) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{t: t, ln: ln, target: target}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { r.serve(c) })
		}
	})
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) serve(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", r.target)
	if err != nil {
		r.t.Errorf("relay: %v", err)
		return
	}
	var cs ClientStream
	var ss ServerStream
	linked := make(chan struct{})  // ss is made, from the client's link
	started := make(chan struct{}) // the display channel has started
	serverDone := make(chan struct{})
	go func() { // server → client
		defer close(serverDone)
		select {
		case <-linked:
		case <-time.After(30 * time.Second):
			return
		}
		buf := make([]byte, 32<<10)
		var once sync.Once
		var refused error
		for {
			n, err := server.Read(buf)
			if ferr := ss.Feed(buf[:n]); ferr != nil && refused == nil {
				refused = ferr
				r.record(nil, ferr)
			}
			if ss.DisplayStarted() {
				cs.ServerStarted()
				once.Do(func() { close(started) })
			}
			_, _ = client.Write(buf[:n]) // the client may be gone
			if err != nil {
				// Only this direction ends: what the client still sends
				// is read and judged (QEMU closes a second display
				// channel of a session as soon as it has linked, which
				// may be before the client's first message arrives).
				if tc, ok := client.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				} else {
					client.Close()
				}
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	var out []byte
	isLinked := false
	for {
		n, err := client.Read(buf)
		var ferr error
		out, ferr = cs.Filter(out[:0], buf[:n])
		if l, ok := cs.Link(); ok && !isLinked {
			isLinked = true
			ss = NewServerStream(l)
			r.record(&l, nil)
			close(linked)
		}
		if len(out) > 0 {
			if _, werr := server.Write(out); werr != nil {
				break
			}
		}
		if ferr != nil {
			r.record(nil, ferr)
			break
		}
		if err != nil {
			break
		}
	}
	// The client left, or sent what may not pass.
	fin, wait := cs.Finish(nil)
	c := closing{link: cs.lp.Link(), waited: wait}
	if len(fin) > 0 {
		_, c.err = server.Write(fin)
	}
	if wait {
		select {
		case <-started:
		case <-serverDone:
		case <-time.After(10 * time.Second):
			c.err = errors.New("the display channel did not start")
		}
	}
	server.Close()
	r.mu.Lock()
	r.closes = append(r.closes, c)
	r.mu.Unlock()
	if !isLinked {
		close(linked)
	}
	<-serverDone
}

func (r *relay) record(l *Link, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l != nil {
		r.links = append(r.links, *l)
	}
	if err != nil {
		r.errs = append(r.errs, err)
	}
}

// TestRelayQEMU runs sessions through the relay: a whole one, then display
// channels that leave early in every way that crashes an unguarded QEMU;
// QEMU lives and a new session works after each.
func TestRelayQEMU(t *testing.T) {
	addr, qemu := testenv.StartQEMUSpiceProcess(t, testenv.QEMUSpice{})
	r := startRelay(t, addr)
	dial := func() net.Conn { return testenv.Dial(t, r.addr(), 60*time.Second) }

	session := func() *Channel {
		t.Helper()
		main, err := LinkChannel(dial(), ChannelMain, 0, "", false)
		if err != nil {
			t.Fatalf("main channel through the relay: %v\n%s", err, qemu.Output())
		}
		d, err := LinkChannel(dial(), ChannelDisplay, main.SessionID, "", false)
		if err != nil {
			t.Fatalf("display channel through the relay: %v", err)
		}
		if _, err := d.WaitFor(MsgSurfaceCreate, 1000); err != nil {
			t.Fatalf("display channel through the relay: %v", err)
		}
		for _, typ := range []ChannelType{ChannelInputs, ChannelCursor} {
			if _, err := LinkChannel(dial(), typ, main.SessionID, "", false); err != nil {
				t.Fatalf("%s channel through the relay: %v", typ, err)
			}
		}
		return main
	}
	main := session()

	init := AppendDisplayInit(nil, true)
	for _, send := range [][]byte{
		nil,  // left before DISPLAY_INIT
		init, // left right after it
		append(append([]byte(nil), init...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), // and a header the server refuses
		{MsgcAckSync, 0, 4, 0, 0, 0, 1, 0, 0, 0},                                 // another message first
	} {
		c := dial()
		if _, err := LinkChannel(c, ChannelDisplay, main.SessionID, "", true); err != nil {
			t.Fatal(err)
		}
		if len(send) > 0 {
			if _, err := c.Write(send); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
		select {
		case <-qemu.Done():
			t.Fatalf("QEMU died after a display channel sent %x and left: %s\n%s", send, qemu.Cmd.ProcessState, qemu.Output())
		case <-time.After(time.Second):
		}
	}
	session()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.closes {
		if c.err != nil {
			t.Errorf("closing a %s channel: %v", c.link.Channel, c.err)
		}
	}
	if len(r.links) != 12 {
		t.Errorf("%d links through the relay, want 12", len(r.links))
	}
	// The one display channel whose first message is not DISPLAY_INIT.
	if len(r.errs) != 1 || !errors.Is(r.errs[0], ErrBadMessage) {
		t.Errorf("the streams refused %v, want one ErrBadMessage", r.errs)
	}
}
