package spice

import (
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// watched is a connection to the SPICE server whose bytes both ways also go
// through the package's parsers, as a proxy's would: what the client writes
// passes ClientStream.Filter, what the server sends is fed to ServerStream.
type watched struct {
	net.Conn
	mu            sync.Mutex
	client        ClientStream
	server        ServerStream
	serverStarted bool
	// What the parsers said, for the test to judge.
	clientErr, serverErr error
}

func (w *watched) Write(p []byte) (int, error) {
	w.mu.Lock()
	out, err := w.client.Filter(nil, p)
	if l, ok := w.client.Link(); ok && !w.serverStarted {
		w.server = NewServerStream(l)
		w.serverStarted = true
	}
	w.mu.Unlock()
	if err != nil {
		w.clientErr = err
		return 0, err
	}
	if _, err := w.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *watched) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	w.mu.Lock()
	if ferr := w.server.Feed(p[:n]); ferr != nil {
		w.serverErr = ferr
	}
	if w.server.DisplayStarted() {
		w.client.ServerStarted()
	}
	w.mu.Unlock()
	return n, err
}

// closeAsProxy closes the connection as a proxy whose client has left
// does: with CloseServer, or (unguarded) at once.
func (w *watched) closeAsProxy(guard bool) error {
	if !guard {
		return w.Conn.Close()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return CloseServer(w.Conn, &w.client, &w.server, 10*time.Second)
}

func dialWatched(t testing.TB, addr string) *watched {
	t.Helper()
	return &watched{Conn: testenv.Dial(t, addr, 60*time.Second)}
}

// TestQEMUSession links a whole session against QEMU's SPICE server: main
// (its session id from MAIN_INIT), then display, inputs and cursor with
// that id, and sees the display channel draw (a surface, then pictures of
// the SeaBIOS screen). The parsers, watching the same bytes, agree.
func TestQEMUSession(t *testing.T) {
	addr := testenv.StartQEMUSpice(t, testenv.QEMUSpice{})
	mainConn := dialWatched(t, addr)
	main, err := LinkChannel(mainConn, ChannelMain, 0, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if main.SessionID == 0 {
		t.Fatal("MAIN_INIT session id 0")
	}
	// The mini header every parser here assumes for spice-html5.
	if main.ServerCommonCaps&(1<<CapMiniHeader) == 0 || main.ServerCommonCaps&(1<<CapProtocolAuthSelection) == 0 {
		t.Fatalf("the server's common caps %#x lack the mini header or auth selection", main.ServerCommonCaps)
	}
	t.Logf("server common caps %#x", main.ServerCommonCaps)
	if id, ok := mainConn.server.SessionID(); !ok || id != main.SessionID {
		t.Fatalf("ServerStream session id %d, %v; MAIN_INIT says %d", id, ok, main.SessionID)
	}
	if mainConn.clientErr != nil || mainConn.serverErr != nil {
		t.Fatalf("parsers: %v, %v", mainConn.clientErr, mainConn.serverErr)
	}
	t.Logf("session id %#x", main.SessionID)

	for _, typ := range []ChannelType{ChannelDisplay, ChannelInputs, ChannelCursor} {
		c := dialWatched(t, addr)
		ch, err := LinkChannel(c, typ, main.SessionID, "", false)
		if err != nil {
			t.Fatalf("%s channel: %v", typ, err)
		}
		if c.clientErr != nil || c.serverErr != nil {
			t.Fatalf("%s channel: parsers: %v, %v", typ, c.clientErr, c.serverErr)
		}
		if typ == ChannelDisplay {
			if !c.client.DisplayInitSent() {
				t.Fatal("ClientStream did not see DISPLAY_INIT")
			}
			surface, err := ch.WaitFor(MsgSurfaceCreate, 1000)
			if err != nil || len(surface) < 12 {
				t.Fatalf("display channel: no SURFACE_CREATE: %v", err)
			}
			// SeaBIOS's text screen, drawn by QXL in VGA mode.
			w, h := binary.LittleEndian.Uint32(surface[4:]), binary.LittleEndian.Uint32(surface[8:])
			if w < 320 || h < 200 {
				t.Errorf("display surface %dx%d", w, h)
			}
			draw, err := ch.WaitFor(MsgDisplayDrawCopy, 10000)
			if err != nil {
				t.Fatalf("display channel: no DRAW_COPY: %v", err)
			}
			t.Logf("display: a %dx%d surface, a first picture of %d bytes", w, h, len(draw))
		}
		if !c.server.Linked() || !c.server.Done() || !c.client.Passthrough() {
			t.Fatalf("%s channel: parsers linked %v done %v passthrough %v", typ, c.server.Linked(), c.server.Done(), c.client.Passthrough())
		}
	}
}

// TestQEMUTicket: spice-server decrypts the ticket even with
// disable-ticketing=on, so a ticket that is not RSA-OAEP of the server's
// key is refused there too; with a password, only the right one links.
func TestQEMUTicket(t *testing.T) {
	addr := testenv.StartQEMUSpice(t, testenv.QEMUSpice{})
	c := testenv.Dial(t, addr, 30*time.Second)
	if err := linkWithRawTicket(c, make([]byte, TicketSize)); !isLinkError(err, LinkErrPermission) {
		t.Fatalf("zero ticket with disable-ticketing: %v, want permission denied", err)
	}
	if _, err := LinkChannel(testenv.Dial(t, addr, 30*time.Second), ChannelMain, 0, "anything", false); err != nil {
		t.Fatalf("any password with disable-ticketing: %v", err)
	}

	addr = testenv.StartQEMUSpice(t, testenv.QEMUSpice{Password: "s3cret,x"})
	if _, err := LinkChannel(testenv.Dial(t, addr, 30*time.Second), ChannelMain, 0, "wrong", false); !isLinkError(err, LinkErrPermission) {
		t.Fatalf("wrong password: %v, want permission denied", err)
	}
	if _, err := LinkChannel(testenv.Dial(t, addr, 30*time.Second), ChannelMain, 0, "s3cret,x", false); err != nil {
		t.Fatalf("right password: %v", err)
	}
}

// TestQEMUBadConnectionID: a channel that names no live session is refused
// by the server with BAD_CONNECTION_ID, and ServerStream says so.
func TestQEMUBadConnectionID(t *testing.T) {
	addr := testenv.StartQEMUSpice(t, testenv.QEMUSpice{})
	c := dialWatched(t, addr)
	_, err := LinkChannel(c, ChannelDisplay, 12345, "", false)
	if !isLinkError(err, LinkErrBadConnectionID) {
		t.Fatalf("made-up connection id: %v, want bad connection id", err)
	}
	if serr := c.serverErr; !isLinkError(serr, LinkErrBadConnectionID) {
		t.Fatalf("ServerStream: %v", serr)
	}
}

func isLinkError(err error, code uint32) bool {
	var le *LinkError
	return errors.As(err, &le) && le.Code == code
}

// linkWithRawTicket links a main channel sending ticket as it is.
func linkWithRawTicket(rw net.Conn, ticket []byte) error {
	if _, err := rw.Write(AppendLink(nil, Link{Channel: ChannelMain, MiniHeader: true, AuthSelection: true})); err != nil {
		return err
	}
	var s ServerStream = NewServerStream(Link{Channel: ChannelMain, MiniHeader: true})
	buf := make([]byte, 4096)
	sent := false
	for {
		n, err := rw.Read(buf)
		if ferr := s.Feed(buf[:n]); ferr != nil {
			return ferr
		}
		if s.state == serverResult && !sent {
			out := binary.LittleEndian.AppendUint32(nil, AuthSpice)
			if _, err := rw.Write(append(out, ticket...)); err != nil {
				return err
			}
			sent = true
		}
		if s.Linked() {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// TestQEMUDisplayClose documents why ClientStream guards display channels
// and proves the guard: Debian 12's QEMU 7.2 with libspice-server 0.15.1
// dies when a display channel's connection fails while the server waits
// for its DISPLAY_INIT: closed before sending one, closed right after it,
// or sending a message the server refuses with it. Through ClientStream
// and CloseServer, QEMU lives, the session keeps working and a new one
// starts.
func TestQEMUDisplayClose(t *testing.T) {
	init := AppendDisplayInit(nil, true)
	hugeWindow := slices.Clone(init)
	binary.LittleEndian.PutUint32(hugeWindow[MiniHeaderSize+10:], glzMaxWindow+1)
	badSize := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} // a header the server refuses
	for _, tc := range []struct {
		name  string
		send  []byte // what the client sends after the link, then it leaves
		guard bool
		dies  bool // without the guard
	}{
		{name: "no DISPLAY_INIT", dies: true},
		{name: "no DISPLAY_INIT", guard: true},
		{name: "DISPLAY_INIT then close", send: init, dies: true},
		{name: "DISPLAY_INIT then close", send: init, guard: true},
		{name: "DISPLAY_INIT and a bad header", send: append(slices.Clone(init), badSize...), dies: true},
		{name: "DISPLAY_INIT and a bad header", send: append(slices.Clone(init), badSize...), guard: true},
		{name: "a GLZ window too large", send: hugeWindow, dies: true},
		{name: "a GLZ window too large", send: hugeWindow, guard: true},
		{name: "another message first", send: []byte{MsgcAckSync, 0, 4, 0, 0, 0, 1, 0, 0, 0}, guard: true},
		{name: "half a DISPLAY_INIT", send: init[:10], guard: true},
	} {
		name := tc.name + "/unguarded"
		if tc.guard {
			name = tc.name + "/guarded"
		}
		t.Run(name, func(t *testing.T) {
			addr, qemu := testenv.StartQEMUSpiceProcess(t, testenv.QEMUSpice{})
			main, err := LinkChannel(testenv.Dial(t, addr, 60*time.Second), ChannelMain, 0, "", false)
			if err != nil {
				t.Fatal(err)
			}
			display := dialWatched(t, addr)
			if _, err := LinkChannel(display, ChannelDisplay, main.SessionID, "", true); err != nil {
				t.Fatal(err)
			}
			if len(tc.send) > 0 {
				if tc.guard {
					_, _ = display.Write(tc.send) // ClientStream may refuse it: that is the point
				} else {
					_, _ = display.Conn.Write(tc.send)
				}
			}
			if err := display.closeAsProxy(tc.guard); err != nil {
				t.Errorf("closing: %v", err)
			}
			select {
			case <-qemu.Done():
				if !tc.dies {
					t.Fatalf("QEMU died: %s\n%s", qemu.Cmd.ProcessState, qemu.Output())
				}
				t.Logf("QEMU died as expected: %s\n%s", qemu.Cmd.ProcessState, qemu.Output())
				return
			case <-time.After(2 * time.Second):
			}
			if tc.dies {
				t.Fatalf("QEMU survived; this test documents that it dies")
			}
			// The session still works, and so does a new one.
			c := testenv.Dial(t, addr, 60*time.Second)
			if _, err := LinkChannel(c, ChannelInputs, main.SessionID, "", false); err != nil {
				t.Fatalf("inputs channel after the display channel closed: %v\n%s", err, qemu.Output())
			}
			again, err := LinkChannel(testenv.Dial(t, addr, 60*time.Second), ChannelMain, 0, "", false)
			if err != nil {
				t.Fatalf("a new session: %v\n%s", err, qemu.Output())
			}
			d, err := LinkChannel(testenv.Dial(t, addr, 60*time.Second), ChannelDisplay, again.SessionID, "", false)
			if err != nil {
				t.Fatalf("a new session's display channel: %v", err)
			}
			if _, err := d.WaitFor(MsgSurfaceCreate, 1000); err != nil {
				t.Fatalf("a new session's display channel: %v", err)
			}
		})
	}
}

// TestQEMUOtherChannelsClose: the other channels a browser opens may close
// right after their link without harm; only display channels need the
// guard.
func TestQEMUOtherChannelsClose(t *testing.T) {
	addr, qemu := testenv.StartQEMUSpiceProcess(t, testenv.QEMUSpice{})
	main, err := LinkChannel(testenv.Dial(t, addr, 60*time.Second), ChannelMain, 0, "", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []ChannelType{ChannelInputs, ChannelCursor, ChannelInputs, ChannelCursor} {
		c := testenv.Dial(t, addr, 60*time.Second)
		if _, err := LinkChannel(c, typ, main.SessionID, "", false); err != nil {
			t.Fatalf("%s channel: %v", typ, err)
		}
		c.Close()
	}
	select {
	case <-qemu.Done():
		t.Fatalf("QEMU died: %s\n%s", qemu.Cmd.ProcessState, qemu.Output())
	case <-time.After(2 * time.Second):
	}
	if _, err := LinkChannel(testenv.Dial(t, addr, 60*time.Second), ChannelDisplay, main.SessionID, "", false); err != nil {
		t.Fatalf("display channel: %v", err)
	}
}

// TestQEMUSecondMainEndsFirst documents what a proxy must keep from the
// server: QEMU's SPICE server takes one client, and a new main channel
// ends the live session, whether it asks for a new session (connection id
// 0) or names the live one (a migration target, which then gets no
// MAIN_INIT).
func TestQEMUSecondMainEndsFirst(t *testing.T) {
	for _, sameID := range []bool{false, true} {
		name := "new session"
		if sameID {
			name = "the live session's id"
		}
		t.Run(name, func(t *testing.T) {
			addr := testenv.StartQEMUSpice(t, testenv.QEMUSpice{})
			first, err := LinkChannel(testenv.Dial(t, addr, 60*time.Second), ChannelMain, 0, "", false)
			if err != nil {
				t.Fatal(err)
			}
			var id uint32
			if sameID {
				id = first.SessionID
			}
			second, err := LinkChannel(testenv.Dial(t, addr, 5*time.Second), ChannelMain, id, "", false)
			switch {
			case !sameID && err != nil:
				t.Fatalf("a new session: %v", err)
			case !sameID && second.SessionID == first.SessionID:
				t.Fatalf("the new session has the live one's id %#x", second.SessionID)
			case sameID && err == nil:
				t.Fatalf("a main channel naming the live session got MAIN_INIT")
			}
			// The first session's main channel is closed by the server
			// (Next answers a PING, and that write fails, or the read does).
			for range 100 {
				if _, _, err = first.Next(); err != nil {
					break
				}
			}
			if err == nil {
				t.Fatal("the first session's main channel lives on")
			}
		})
	}
}
