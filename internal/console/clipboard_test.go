package console_test

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbframe"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbproxy"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
)

// serverMsg is a message a test client got from the VNC server: its kind
// and, for the clipboard's, the whole message.
type serverMsg struct {
	kind  rfbframe.Kind
	flags uint32
	raw   []byte
}

// text is the clipboard text of a ServerCutText, or of an Extended
// Clipboard provide (inflated, without its NUL).
func (m serverMsg) text(t *testing.T) string {
	t.Helper()
	if m.kind == rfbframe.ServerCutText {
		return string(m.raw[8:])
	}
	zr, err := zlib.NewReader(bytes.NewReader(m.raw[12:]))
	if err != nil {
		t.Fatalf("Extended Clipboard provide: %v", err)
	}
	var size [4]byte
	if _, err := io.ReadFull(zr, size[:]); err != nil {
		t.Fatalf("Extended Clipboard provide: %v", err)
	}
	b := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(zr, b); err != nil {
		t.Fatalf("Extended Clipboard provide: %v", err)
	}
	return string(bytes.TrimSuffix(b, []byte{0}))
}

// clipClient is a VNC client, through the proxy or straight to the VNC
// server, that frames what the server sends (with the proxy's own
// framer) and answers the server's Extended Clipboard requests with
// paste.
type clipClient struct {
	t    *testing.T
	rw   io.ReadWriter
	msgs chan serverMsg

	mu    sync.Mutex // orders writes
	paste string
}

func newClipClient(t *testing.T, rw io.ReadWriter, encodings ...int32) *clipClient {
	t.Helper()
	si, err := rfb.ClientHandshakeWith(rw, rfb.HandshakeOptions{})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	c := &clipClient{t: t, rw: rw, msgs: make(chan serverMsg, 1024)}
	var b bytes.Buffer
	_ = rfb.SetEncodings(&b, encodings...)
	c.write(b.Bytes())
	f, err := rfbframe.NewFramer(si.PixelFormat)
	if err != nil {
		t.Fatal(err)
	}
	go c.read(f)
	return c
}

func (c *clipClient) write(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.rw.Write(p); err != nil {
		c.t.Errorf("writing to the VNC server: %v", err)
	}
}

// read frames the server's stream until it ends.
func (c *clipClient) read(f *rfbframe.Framer) {
	defer close(c.msgs)
	buf := make([]byte, 0, 256<<10)
	var cur serverMsg
	for {
		n, err := c.rw.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		p := buf
		for len(p) > 0 {
			s, ferr := f.Next(p)
			if ferr != nil {
				c.t.Errorf("the client got a stream it cannot frame: %v", ferr)
				return
			}
			if s.Len == 0 {
				break
			}
			if s.Start {
				cur = serverMsg{kind: s.Kind, flags: s.Clipboard}
			}
			if s.Kind == rfbframe.ServerCutText || s.Kind == rfbframe.ExtendedClipboard {
				cur.raw = append(cur.raw, p[:s.Len]...)
			}
			if s.End {
				if cur.kind == rfbframe.ExtendedClipboard && cur.flags&rfb.ClipboardCaps == 0 && cur.flags&rfb.ClipboardRequest != 0 {
					c.mu.Lock()
					text := c.paste
					c.mu.Unlock()
					c.write(extendedProvide(text))
				}
				c.msgs <- cur
			}
			p = p[s.Len:]
		}
		buf = buf[:copy(buf, p)]
		if err != nil {
			return
		}
	}
}

// next waits for the next message that is not an update of pictures.
func (c *clipClient) next(what string) serverMsg {
	c.t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				c.t.Fatalf("the stream ended while waiting for %s", what)
			}
			if m.kind != rfbframe.FramebufferUpdate {
				return m
			}
		case <-timeout:
			c.t.Fatalf("no %s", what)
		}
	}
}

// sync asks for a picture of a corner and waits for it, reporting the
// clipboard messages that came before it.
func (c *clipClient) sync() []serverMsg {
	c.t.Helper()
	var b bytes.Buffer
	_ = rfb.RequestUpdate(&b, false, 0, 0, 8, 8)
	c.write(b.Bytes())
	var got []serverMsg
	timeout := time.After(wait)
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				c.t.Fatal("the stream ended while waiting for an update")
			}
			if m.kind == rfbframe.FramebufferUpdate {
				return got
			}
			if m.kind == rfbframe.ServerCutText || m.kind == rfbframe.ExtendedClipboard && m.flags&(rfb.ClipboardProvide|rfb.ClipboardNotify) != 0 {
				got = append(got, m)
			}
		case <-timeout:
			c.t.Fatal("no update came")
		}
	}
}

func extendedMessage(msgType byte, flags uint32, payload []byte) []byte {
	b := []byte{msgType, 0, 0, 0}
	b = binary.BigEndian.AppendUint32(b, uint32(-int32(4+len(payload))))
	b = binary.BigEndian.AppendUint32(b, flags)
	return append(b, payload...)
}

// extendedProvide is a client's Extended Clipboard provide of text.
func extendedProvide(text string) []byte {
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	_ = binary.Write(zw, binary.BigEndian, uint32(len(text)+1))
	_, _ = zw.Write(append([]byte(text), 0))
	_ = zw.Close()
	return extendedMessage(rfb.MsgClientCutText, rfb.ClipboardProvide|rfb.ClipboardText, z.Bytes())
}

// xvncClipboard is an Xvnc for clipboard tests: its address and display.
type xvncClipboard struct {
	addr    string
	display string
	xclip   string
}

func startXvncClipboard(t *testing.T) xvncClipboard {
	t.Helper()
	xclip := testenv.Require(t, "xclip", "xclip")
	addr := testenv.StartXvnc(t)
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	// testenv.StartXvnc's display.
	return xvncClipboard{addr: addr, display: ":" + strconv.Itoa(100+p%800), xclip: xclip}
}

// copyText makes text the X clipboard of Xvnc's display, served by xclip
// until the test ends.
func (x xvncClipboard) copyText(t *testing.T, text string) {
	t.Helper()
	file := t.TempDir() + "/clipboard"
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	// -quiet keeps xclip in the foreground, where the test can stop it.
	testenv.StartEnv(t, append(os.Environ(), "DISPLAY="+x.display), x.xclip, "-quiet", "-selection", "clipboard", "-i", file)
}

// pasted is the X clipboard of Xvnc's display, "" when nothing owns it.
func (x xvncClipboard) pasted(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, x.xclip, "-o", "-selection", "clipboard")
	cmd.Env = append(os.Environ(), "DISPLAY="+x.display)
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// clipboardRig is a console to x with policy, its browser a clipClient.
func clipboardRig(t *testing.T, x xvncClipboard, policy rfbproxy.Clipboard, encodings ...int32) (*rig, *websocket.Conn, *clipClient, *console.Session) {
	t.Helper()
	r := newRig(t, rigOptions{transport: overWS, target: x.addr, prepare: loginWith(""), config: func(c *console.Config) {
		c.Clipboard = policy
	}})
	ws, s := r.open()
	_ = ws.SetReadDeadline(time.Now().Add(2 * wait))
	return r, ws, newClipClient(t, wsstream.New(ws), encodings...), s
}

// TestClipboardCopyXvnc: TigerVNC's clipboard, set with xclip, reaches
// the browser as ServerCutText or Extended Clipboard when copying is
// allowed, and not otherwise, while pictures keep flowing; what the proxy
// dropped is counted in the session's end.
func TestClipboardCopyXvnc(t *testing.T) {
	const text = "copied from the console"
	for _, c := range []struct {
		name     string
		policy   rfbproxy.Clipboard
		extended bool
		copied   bool
	}{
		{"copy", rfbproxy.Clipboard{NoPaste: true}, false, true},
		{"copy off", rfbproxy.Clipboard{NoCopy: true}, false, false},
		{"copy past max_size", rfbproxy.Clipboard{MaxSize: 8}, false, false},
		{"extended copy", rfbproxy.Clipboard{NoPaste: true}, true, true},
		{"extended copy off", rfbproxy.Clipboard{NoCopy: true}, true, false},
		{"extended copy past max_size", rfbproxy.Clipboard{MaxSize: 8}, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			x := startXvncClipboard(t)
			encodings := []int32{rfb.EncodingRaw, rfb.EncodingJPEG}
			if c.extended {
				encodings = append(encodings, rfb.EncodingExtendedClipboard)
			}
			r, ws, browser, s := clipboardRig(t, x, c.policy, encodings...)
			if c.extended {
				if m := browser.next("Extended Clipboard capabilities"); m.kind != rfbframe.ExtendedClipboard || m.flags&rfb.ClipboardCaps == 0 {
					t.Fatalf("got %v %#x, want the server's capabilities", m.kind, m.flags)
				}
			}
			browser.sync()
			x.copyText(t, text)
			if c.copied {
				m := browser.next("the clipboard")
				if m.kind == rfbframe.ExtendedClipboard && m.flags&rfb.ClipboardNotify != 0 {
					// Xvnc says it has text, and sends it once asked.
					browser.write(extendedMessage(rfb.MsgClientCutText, rfb.ClipboardRequest|rfb.ClipboardText, nil))
					m = browser.next("the clipboard's text")
				}
				if m.text(t) != text {
					t.Fatalf("the browser got %q", m.text(t))
				}
			} else {
				waitFor(t, "the clipboard to be dropped", func() bool { return s.ClipboardDropped() > 0 })
			}
			// Pictures still flow, and nothing else came.
			if got := browser.sync(); len(got) != 0 {
				t.Fatalf("the browser got %d more clipboard messages (%v %#x)", len(got), got[0].kind, got[0].flags)
			}
			ws.Close()
			line := r.endLine(s.ID())
			if dropped := line["clipboard_dropped"]; (dropped != int64(0)) != !c.copied {
				t.Errorf("clipboard_dropped %v", dropped)
			}
		})
	}
}

// TestClipboardPasteXvnc: the browser's clipboard reaches TigerVNC's X
// clipboard when pasting is allowed and within max_size, and not
// otherwise.
func TestClipboardPasteXvnc(t *testing.T) {
	const text = "pasted in"
	long := string(bytes.Repeat([]byte("too long "), 8))
	for _, c := range []struct {
		name     string
		policy   rfbproxy.Clipboard
		extended bool
		want     string
		dropped  int64
	}{
		{"paste", rfbproxy.Clipboard{NoCopy: true}, false, text, 0},
		{"paste off", rfbproxy.Clipboard{NoPaste: true}, false, "", 1},
		{"paste past max_size", rfbproxy.Clipboard{MaxSize: 16}, false, text, 1},
		{"extended paste", rfbproxy.Clipboard{NoCopy: true}, true, text, 0},
		{"extended paste off", rfbproxy.Clipboard{NoPaste: true}, true, "", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			x := startXvncClipboard(t)
			encodings := []int32{rfb.EncodingRaw}
			if c.extended {
				encodings = append(encodings, rfb.EncodingExtendedClipboard)
			}
			r, ws, browser, s := clipboardRig(t, x, c.policy, encodings...)
			browser.sync()
			if c.extended {
				// The browser says it has text; Xvnc asks for it when
				// someone reads the X clipboard.
				browser.mu.Lock()
				browser.paste = text
				browser.mu.Unlock()
				browser.write(extendedMessage(rfb.MsgClientCutText, rfb.ClipboardNotify|rfb.ClipboardText, nil))
			} else {
				var b bytes.Buffer
				_ = rfb.ClientCutText(&b, []byte(text))
				_ = rfb.ClientCutText(&b, []byte(long))
				if c.policy.MaxSize == 0 {
					b.Truncate(8 + len(text))
				}
				browser.write(b.Bytes())
			}
			browser.sync() // Xvnc has taken what came before
			if got := x.pasted(t); got != c.want {
				t.Errorf("the X clipboard holds %q, want %q", got, c.want)
			}
			ws.Close()
			if line := r.endLine(s.ID()); line["clipboard_dropped"] != c.dropped {
				t.Errorf("clipboard_dropped %v, want %d", line["clipboard_dropped"], c.dropped)
			}
		})
	}
}

// TestClipboardUnframeable: a console with a clipboard policy whose VNC
// server sends what the proxy cannot frame (a JPEG rectangle, which it
// took out of the offer) gets what came before it, then close 1011; the
// log names the encoding.
func TestClipboardUnframeable(t *testing.T) {
	jpeg := []byte{rfb.MsgFramebufferUpdate, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1}
	jpeg = binary.BigEndian.AppendUint32(jpeg, uint32(rfb.EncodingJPEG))
	addr := startTarget(t, func(c net.Conn, _ <-chan struct{}) {
		var b [12]byte
		if _, err := io.WriteString(c, greeting); err != nil {
			return
		}
		if _, err := io.ReadFull(c, b[:12]); err != nil {
			return
		}
		if _, err := c.Write([]byte{1, rfb.SecurityNone}); err != nil {
			return
		}
		if _, err := io.ReadFull(c, b[:1]); err != nil {
			return
		}
		if _, err := c.Write([]byte{0, 0, 0, 0}); err != nil {
			return
		}
		if _, err := io.ReadFull(c, b[:1]); err != nil { // ClientInit
			return
		}
		if _, err := c.Write(append(append(serverInit(), rfb.MsgBell), jpeg...)); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
	})
	r := newRig(t, rigOptions{transport: overWS, target: addr, prepare: loginWith(""), config: func(c *console.Config) {
		c.Clipboard = rfbproxy.Clipboard{NoCopy: true}
	}})
	ws, s := r.open()
	_ = ws.SetReadDeadline(time.Now().Add(wait))
	stream := wsstream.New(ws)
	if _, err := rfb.ClientHandshakeWith(stream, rfb.HandshakeOptions{}); err != nil {
		t.Fatal(err)
	}
	var bell [1]byte
	if _, err := io.ReadFull(stream, bell[:]); err != nil || bell[0] != rfb.MsgBell {
		t.Fatalf("got %v, %v; want the Bell", bell, err)
	}
	expectClose(t, ws, websocket.CloseInternalServerErr, "VNC server sent a message the proxy cannot frame")
	line := r.endLine(s.ID())
	if line["reason"] != "vnc server stream cannot be framed" || !strings.Contains(line["error"].(string), "JPEG") {
		t.Errorf("end line %v, want the reason and an error naming JPEG", line)
	}
}
