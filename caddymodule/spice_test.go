package caddymodule

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/spice"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
)

// spiceChannel opens a WebSocket to url as spice-html5 does (subprotocol
// "binary") and links a channel of typ on it.
func spiceChannel(t *testing.T, url string, typ spice.ChannelType, connectionID uint32, noDisplayInit bool) (*websocket.Conn, *spice.Channel) {
	t.Helper()
	return spiceChannelWith(t, url, http.Header{}, typ, connectionID, noDisplayInit)
}

// spiceChannelWith is spiceChannel with more request headers (a Cookie).
func spiceChannelWith(t *testing.T, url string, header http.Header, typ spice.ChannelType, connectionID uint32, noDisplayInit bool) (*websocket.Conn, *spice.Channel) {
	t.Helper()
	header = header.Clone()
	header.Set("Sec-WebSocket-Protocol", "binary")
	ws, status, body := dialWS(t, url, header)
	if ws == nil {
		t.Fatalf("%s channel: refused %d %s", typ, status, body)
	}
	if got := ws.Subprotocol(); got != "binary" {
		t.Errorf("subprotocol %q, want binary", got)
	}
	_ = ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	ch, err := spice.LinkChannel(wsstream.New(ws), typ, connectionID, "", noDisplayInit)
	if err != nil {
		t.Fatalf("%s channel: %v", typ, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return ws, ch
}

// refusedChannel checks that a channel whose link is sent on a new
// WebSocket is closed with 1008 and want.
func refusedChannel(t *testing.T, url string, first []byte, want string) {
	t.Helper()
	ws, status, body := dialWS(t, url, nil)
	if ws == nil {
		t.Fatalf("refused before the upgrade: %d %s", status, body)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.BinaryMessage, first); err != nil {
		t.Fatal(err)
	}
	code, text := closeText(t, ws, 10*time.Second)
	if code != websocket.ClosePolicyViolation || text != want {
		t.Fatalf("closed %d %q, want 1008 %q", code, text, want)
	}
}

type spiceListed struct {
	ID             string `json:"id"`
	TokenHash      string `json:"token_hash"`
	Channels       int    `json:"channels"`
	BytesToBrowser int64  `json:"bytes_to_browser"`
}

func listSPICE(t *testing.T, api string) []spiceListed {
	t.Helper()
	status, body := adminCall(t, http.MethodGet, api, "")
	if status != http.StatusOK {
		t.Fatalf("list: %d %s", status, body)
	}
	var got []spiceListed
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("list %s: %v", body, err)
	}
	return got
}

// TestSPICEConsole runs a SPICE session through the real binary with
// protocol spice to QEMU's SPICE server, as spice-html5 opens it: main,
// then display (which draws SeaBIOS), inputs and cursor, each its own
// WebSocket with the same token. The four channels are one console: one
// admin entry with "channels": 4, one place for max_sessions_per_token (a
// second session is closed 1008 and the first keeps its channels), one
// end (the admin's ends all four). A made-up session id, another token's
// session, bytes that are no SPICE link and a browser that sends nothing
// are closed, none of it reaching QEMU; a display channel closed before its
// DISPLAY_INIT leaves QEMU running.
func TestSPICEConsole(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	addr, qemu := testenv.StartQEMUSpiceProcess(t, testenv.QEMUSpice{})
	dir := t.TempDir()
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	token, other := "spice-"+secretToken, "other-"+secretToken
	tokens := writeTokenFile(t, dir, token+": "+addr, other+": "+addr)
	site, _ := startCaddyProcessAdmin(t, dir, admin, fmt.Sprintf(
		"vnc_proxy /websockify {\n\t\tresolver file %s\n\t\tprotocol spice\n\t\tmax_sessions_per_token 1\n\t\tdial_timeout 3s\n\t}", tokens))
	url := "ws://" + site + "/websockify?token=" + token
	api := "http://" + admin + "/vnc_proxy/sessions"

	mainWS, main := spiceChannel(t, url, spice.ChannelMain, 0, false)
	if main.SessionID == 0 {
		t.Fatal("no session id from MAIN_INIT")
	}
	// A display channel whose browser leaves before DISPLAY_INIT: QEMU
	// 7.2 would crash if the proxy just closed its side.
	early, _ := spiceChannel(t, url, spice.ChannelDisplay, main.SessionID, true)
	early.Close()
	time.Sleep(3 * time.Second)
	select {
	case <-qemu.Done():
		t.Fatalf("QEMU exited after a display channel closed early:\n%s", qemu.Output())
	default:
	}
	displayWS, display := spiceChannel(t, url, spice.ChannelDisplay, main.SessionID, false)
	if _, err := display.WaitFor(spice.MsgSurfaceCreate, 1000); err != nil {
		t.Fatalf("display channel: no SURFACE_CREATE: %v", err)
	}
	if _, err := display.WaitFor(spice.MsgDisplayDrawCopy, 10000); err != nil {
		t.Fatalf("display channel: no picture: %v", err)
	}
	inputsWS, _ := spiceChannel(t, url, spice.ChannelInputs, main.SessionID, false)
	cursorWS, _ := spiceChannel(t, url, spice.ChannelCursor, main.SessionID, false)
	channels := []*websocket.Conn{mainWS, displayWS, inputsWS, cursorWS}

	listed := listSPICE(t, api)
	if len(listed) != 1 || listed[0].Channels != 4 || listed[0].TokenHash != admission.TokenHash(token) || listed[0].BytesToBrowser == 0 {
		t.Fatalf("admin list %+v, want one console of 4 channels", listed)
	}

	// Hostile channels, each closed 1008 before anything reaches QEMU.
	link := func(ch spice.ChannelType, id uint32) []byte {
		return spice.AppendLink(nil, spice.Link{Channel: ch, ConnectionID: id, MiniHeader: true, AuthSelection: true})
	}
	otherURL := "ws://" + site + "/websockify?token=" + other
	refusedChannel(t, otherURL, link(spice.ChannelDisplay, main.SessionID), console.ReasonUnknownSPICESession)
	refusedChannel(t, url, link(spice.ChannelInputs, main.SessionID+1), console.ReasonUnknownSPICESession)
	refusedChannel(t, url, link(spice.ChannelMain, main.SessionID), console.ReasonUnknownSPICESession)
	refusedChannel(t, url, []byte("RFB 003.008\n"), "not a SPICE client")
	// A header whose size is beyond any link message, and one that
	// announces more than comes: the latter is let go at dial_timeout.
	huge := link(spice.ChannelMain, 0)
	binary.LittleEndian.PutUint32(huge[12:], 1<<31)
	refusedChannel(t, url, huge, "not a SPICE client")
	short := link(spice.ChannelMain, 0)
	binary.LittleEndian.PutUint32(short[12:], spice.MaxLinkSize)
	refusedChannel(t, url, short, "not a SPICE client")
	// A second session beyond max_sessions_per_token.
	refusedChannel(t, url, link(spice.ChannelMain, 0), "too many consoles for this token")

	// A browser that sends nothing is let go at dial_timeout.
	silent, status, body := dialWS(t, url, nil)
	if silent == nil {
		t.Fatalf("refused before the upgrade: %d %s", status, body)
	}
	if code, text := closeText(t, silent, 10*time.Second); code != websocket.ClosePolicyViolation || text != "not a SPICE client" {
		t.Fatalf("a silent browser: closed %d %q", code, text)
	}
	silent.Close()

	// The live session kept its channels through all of it.
	listed = listSPICE(t, api)
	if len(listed) != 1 || listed[0].Channels != 4 {
		t.Fatalf("admin list %+v, want the console of 4 channels", listed)
	}
	// One end for all four.
	if status, body := adminCall(t, http.MethodDelete, api+"/"+listed[0].ID, ""); status != http.StatusOK {
		t.Fatalf("end: %d %s", status, body)
	}
	for i, ws := range channels {
		code, text := closeText(t, ws, 5*time.Second)
		if code != websocket.ClosePolicyViolation || text != console.ReasonByAdmin {
			t.Fatalf("channel %d closed %d %q, want 1008 %q", i, code, text, console.ReasonByAdmin)
		}
	}
	waitFor(t, 10*time.Second, "the console to leave the list", func() bool { return len(listSPICE(t, api)) == 0 })
	select {
	case <-qemu.Done():
		t.Fatalf("QEMU exited:\n%s", qemu.Output())
	default:
	}

	// The console's place is free once its last channel has closed (the
	// list shows it gone when its main channel is); then an ended
	// session's id joins nothing, and a new session opens.
	waitFor(t, 10*time.Second, "the console's place to be free", func() bool {
		ws, status, body := dialWS(t, url, nil)
		if ws == nil {
			if status != http.StatusTooManyRequests {
				t.Fatalf("refused %d %s", status, body)
			}
			return false
		}
		defer ws.Close()
		// The place is this request's until it is refused.
		if err := ws.WriteMessage(websocket.BinaryMessage, link(spice.ChannelDisplay, main.SessionID)); err != nil {
			t.Fatal(err)
		}
		if code, text := closeText(t, ws, 10*time.Second); code != websocket.ClosePolicyViolation || text != console.ReasonUnknownSPICESession {
			t.Fatalf("a channel of the ended session: closed %d %q", code, text)
		}
		return true
	})
	again, second := spiceChannel(t, url, spice.ChannelMain, 0, false)
	if second.SessionID == 0 {
		t.Fatal("no session id from the second MAIN_INIT")
	}
	again.Close()
}

// TestSPICEOneTimeAndRevocation: a one_time token (Redis) is spent by the
// main channel alone: its later channels join without a lookup, a second
// session with the spent token is closed 1008 and leaves the first alone,
// and a revocation (a Redis message) ends every channel of the console.
func TestSPICEOneTimeAndRevocation(t *testing.T) {
	addr := testenv.StartQEMUSpice(t, testenv.QEMUSpice{})
	rs := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	ctx := context.Background()
	token := "once-" + secretToken
	if err := rdb.Set(ctx, "vnc:"+token, addr, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	const channel = "vnc-revocations"
	tc := startCaddy(t, fmt.Sprintf(`vnc_proxy /websockify {
		resolver redis %s {
			key_prefix vnc:
			one_time
			revocations %s
		}
		protocol spice
	}`, rs.Addr, channel))
	url := tc.url("/websockify?token=" + token)

	mainWS, main := spiceChannel(t, url, spice.ChannelMain, 0, false)
	displayWS, display := spiceChannel(t, url, spice.ChannelDisplay, main.SessionID, false)
	if _, err := display.WaitFor(spice.MsgSurfaceCreate, 1000); err != nil {
		t.Fatalf("display channel: %v", err)
	}
	inputsWS, _ := spiceChannel(t, url, spice.ChannelInputs, main.SessionID, false)

	refusedChannel(t, url, spice.AppendLink(nil, spice.Link{Channel: spice.ChannelMain, MiniHeader: true, AuthSelection: true}), "invalid or expired token")
	listed := console.Sessions.List()
	if len(listed) != 1 || listed[0].Channels != 3 {
		t.Fatalf("live consoles %+v, want one of 3 channels", listed)
	}

	waitFor(t, 15*time.Second, "the revocation subscription", func() bool {
		n, err := rdb.PubSubNumSub(ctx, channel).Result()
		return err == nil && n[channel] == 1
	})
	if err := rdb.Publish(ctx, channel, `{"token_hash": "`+admission.TokenHash(token)+`"}`).Err(); err != nil {
		t.Fatal(err)
	}
	for _, ws := range []*websocket.Conn{mainWS, displayWS, inputsWS} {
		expectAdminClose(t, ws)
	}
	waitFor(t, 10*time.Second, "the spent token to be refused", func() bool {
		ws, status, _ := dialWS(t, url, nil)
		if ws != nil {
			ws.Close()
			return false
		}
		return status == http.StatusForbidden
	})
}

// TestSPICETransports: a SPICE session's channels over HTTP/1.1 (TLS), and
// over HTTP/2 and HTTP/3 streams (extended CONNECT), as a browser that
// has them opens them.
func TestSPICETransports(t *testing.T) {
	addr := testenv.StartQEMUSpice(t, testenv.QEMUSpice{})
	token := "spice-" + secretToken
	tokens := writeTokenFile(t, t.TempDir(), token+": "+addr)
	for _, transport := range []string{"wss", "h2", "h3"} {
		t.Run(transport, func(t *testing.T) {
			tc := startCaddyOver(t, transport, fileSite(tokens, "protocol spice"))
			url := tc.url("/websockify?token=" + token)
			mainWS, main := spiceChannel(t, url, spice.ChannelMain, 0, false)
			displayWS, display := spiceChannel(t, url, spice.ChannelDisplay, main.SessionID, false)
			if _, err := display.WaitFor(spice.MsgSurfaceCreate, 1000); err != nil {
				t.Fatalf("display channel: %v", err)
			}
			if listed := console.Sessions.List(); len(listed) != 1 || listed[0].Channels != 2 || listed[0].Transport != transport[:2] {
				t.Fatalf("live consoles %+v, want one of 2 channels over %s", listed, transport)
			}
			// The browser closes the main channel: the display channel
			// is closed with it.
			_ = mainWS.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			if code, _ := closeText(t, displayWS, 5*time.Second); code != websocket.CloseNormalClosure {
				t.Fatalf("display channel closed %d, want 1000", code)
			}
			mainWS.Close()
			waitFor(t, 10*time.Second, "the console to end", func() bool { return console.Sessions.Len() == 0 })
		})
	}
}
