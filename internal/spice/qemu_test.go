package spice

import (
	"encoding/binary"
	"errors"
	"net"
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
	w.mu.Unlock()
	return n, err
}

// closeAsProxy closes the connection the way a proxy must when the browser
// has left: what Finish asks for first, then a half-close and a short wait
// for the server's own close, so nothing written is lost to a reset.
func (w *watched) closeAsProxy(mitigate bool) {
	if mitigate {
		w.mu.Lock()
		fin := w.client.Finish(nil)
		w.mu.Unlock()
		if len(fin) > 0 {
			_, _ = w.Conn.Write(fin)
		}
	}
	w.Conn.Close()
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
		if !c.server.Linked() || !c.server.Done() || !c.client.Passthrough() {
			t.Fatalf("%s channel: parsers linked %v done %v passthrough %v", typ, c.server.Linked(), c.server.Done(), c.client.Passthrough())
		}
		if typ == ChannelDisplay {
			if !c.client.DisplayInitSent() {
				t.Fatal("ClientStream did not see DISPLAY_INIT")
			}
			if _, err := ch.WaitFor(MsgSurfaceCreate, 1000); err != nil {
				t.Fatalf("display channel: no SURFACE_CREATE: %v", err)
			}
			if _, err := ch.WaitFor(MsgDisplayDrawCopy, 10000); err != nil {
				t.Fatalf("display channel: no DRAW_COPY: %v", err)
			}
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
