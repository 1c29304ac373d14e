package console_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/vncdemo"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
)

// rfbTarget is a VNC server that speaks RFB 3.8 with security None and
// records what its client sends: ClientInit's shared flag, then every
// byte after it.
type rfbTarget struct {
	addr  string
	inits chan byte

	mu  sync.Mutex
	got []byte
}

func startRFBTarget(t *testing.T) *rfbTarget {
	rt := &rfbTarget{inits: make(chan byte, 8)}
	rt.addr = startTarget(t, func(c net.Conn, _ <-chan struct{}) {
		if _, err := io.WriteString(c, greeting); err != nil {
			return
		}
		var version [12]byte
		if _, err := io.ReadFull(c, version[:]); err != nil {
			return
		}
		if _, err := c.Write([]byte{1, rfb.SecurityNone}); err != nil {
			return
		}
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != rfb.SecurityNone {
			return
		}
		if _, err := c.Write([]byte{0, 0, 0, 0}); err != nil {
			return
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return
		}
		rt.inits <- b[0]
		if _, err := c.Write(serverInit()); err != nil {
			return
		}
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			rt.mu.Lock()
			rt.got = append(rt.got, buf[:n]...)
			rt.mu.Unlock()
			if err != nil {
				return
			}
		}
	})
	return rt
}

// serverInit is a 4x4 desktop named "fake".
func serverInit() []byte {
	b := binary.BigEndian.AppendUint16(nil, 4)
	b = binary.BigEndian.AppendUint16(b, 4)
	pf := rfb.PixelFormat32.Marshal()
	b = append(b, pf[:]...)
	b = binary.BigEndian.AppendUint32(b, 4)
	return append(b, "fake"...)
}

func (rt *rfbTarget) received() []byte {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return bytes.Clone(rt.got)
}

// loginWith logs in to the VNC server as the admission pipeline does for
// an RFB-aware console.
func loginWith(password string) func(net.Conn) ([]byte, *rfb.Result, error) {
	return func(c net.Conn) ([]byte, *rfb.Result, error) {
		g, _, err := readGreeting(c)
		if err != nil {
			return nil, nil, err
		}
		_, res, err := rfb.Login(c, g, rfb.Credentials{Password: password})
		if err != nil {
			return nil, nil, err
		}
		return nil, &res, nil
	}
}

// browserHandshake runs a browser's side of the handshake the proxy
// offers (RFB 3.8, security None) and sends ClientInit, with extra in
// the same message; it returns the ServerInit's desktop name.
func browserHandshake(t *testing.T, ws *websocket.Conn, shared byte, extra []byte) string {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(wait))
	stream := wsstream.New(ws)
	var version [12]byte
	if _, err := io.ReadFull(stream, version[:]); err != nil || string(version[:]) != "RFB 003.008\n" {
		t.Fatalf("the proxy offered %q, %v", version, err)
	}
	if _, err := stream.Write([]byte("RFB 003.008\n")); err != nil {
		t.Fatal(err)
	}
	var types [2]byte
	if _, err := io.ReadFull(stream, types[:]); err != nil || types != [2]byte{1, rfb.SecurityNone} {
		t.Fatalf("security types %v, %v; want None only", types, err)
	}
	if _, err := stream.Write([]byte{rfb.SecurityNone}); err != nil {
		t.Fatal(err)
	}
	var result [4]byte
	if _, err := io.ReadFull(stream, result[:]); err != nil || result != [4]byte{} {
		t.Fatalf("security result %v, %v", result, err)
	}
	if _, err := stream.Write(append([]byte{shared}, extra...)); err != nil {
		t.Fatal(err)
	}
	init := make([]byte, 24+4)
	if _, err := io.ReadFull(stream, init); err != nil {
		t.Fatalf("ServerInit: %v", err)
	}
	return string(init[24:])
}

// TestRFBAwareVNCAuth: the proxy logged in with the VNC server's
// password; the browser gets security None and then the desktop, in full.
func TestRFBAwareVNCAuth(t *testing.T) {
	srv := &vncdemo.Server{Password: "sesame"}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	for _, transport := range []string{overWS, overH2} {
		t.Run(transport, func(t *testing.T) {
			r := newRig(t, rigOptions{transport: transport, target: l.Addr().String(), prepare: loginWith("sesame")})
			ws, s := r.open()
			_ = ws.SetReadDeadline(time.Now().Add(wait))
			stream := wsstream.New(ws)
			si, err := rfb.ClientHandshake(stream, "")
			if err != nil {
				t.Fatal(err)
			}
			if si.Security != rfb.SecurityNone || si.Name != "vncdemo" || si.Width != 800 || si.Height != 600 {
				t.Fatalf("ServerInit %+v through the proxy", si)
			}
			if err := rfb.SetEncodings(stream, rfb.EncodingRaw); err != nil {
				t.Fatal(err)
			}
			if err := rfb.RequestUpdate(stream, false, 0, 0, 800, 600); err != nil {
				t.Fatal(err)
			}
			fb := rfb.NewFramebuffer(800, 600)
			for covered := 0; covered < 800*600; {
				rects, err := rfb.ReadFramebufferUpdate(stream, si.PixelFormat)
				if err != nil {
					t.Fatal(err)
				}
				fb.Apply(rects)
				for _, rc := range rects {
					covered += rc.Width * rc.Height
				}
			}
			if red, g, b := fb.At(0, 0); red != 255 || g != 0 || b != 0 {
				t.Errorf("top-left pixel (%d,%d,%d), want red", red, g, b)
			}
			if s.Info().ViewOnly {
				t.Error("listed view-only")
			}
			ws.Close()
			r.waitReleased(s.ID())
		})
	}
}

// TestViewOnly: ClientInit is forced shared, input is dropped and counted,
// pictures are asked for; a message the filter does not know ends the
// console with 1008. Without view-only, the browser's ClientInit and input
// reach the VNC server as sent.
func TestViewOnly(t *testing.T) {
	var input bytes.Buffer
	_ = rfb.KeyEvent(&input, true, 'a')
	_ = rfb.PointerEvent(&input, 1, 10, 10)
	_ = rfb.ClientCutText(&input, []byte("secret"))
	var pictures bytes.Buffer
	_ = rfb.RequestUpdate(&pictures, true, 0, 0, 4, 4)
	_ = rfb.SetPixelFormat32(&pictures)
	var first bytes.Buffer
	_ = rfb.RequestUpdate(&first, false, 0, 0, 4, 4)

	for _, transport := range []string{overWS, overH2} {
		for _, viewOnly := range []bool{false, true} {
			name := transport + " full"
			if viewOnly {
				name = transport + " view-only"
			}
			t.Run(name, func(t *testing.T) {
				rt := startRFBTarget(t)
				r := newRig(t, rigOptions{transport: transport, target: rt.addr, prepare: loginWith(""), config: func(c *console.Config) {
					c.ViewOnly = viewOnly
				}})
				ws, s := r.open()
				// ClientInit asks for an exclusive desktop, and the first
				// request comes in the same message.
				if name := browserHandshake(t, ws, 0, first.Bytes()); name != "fake" {
					t.Fatalf("desktop %q", name)
				}
				select {
				case shared := <-rt.inits:
					if want := map[bool]byte{false: 0, true: 1}[viewOnly]; shared != want {
						t.Errorf("the VNC server got ClientInit shared=%d, want %d", shared, want)
					}
				case <-time.After(wait):
					t.Fatal("no ClientInit reached the VNC server")
				}
				if s.Info().ViewOnly != viewOnly {
					t.Errorf("listed view-only %v", s.Info().ViewOnly)
				}
				stream := wsstream.New(ws)
				if _, err := stream.Write(input.Bytes()); err != nil {
					t.Fatal(err)
				}
				if _, err := stream.Write(pictures.Bytes()); err != nil {
					t.Fatal(err)
				}
				want := append(bytes.Clone(first.Bytes()), input.Bytes()...)
				want = append(want, pictures.Bytes()...)
				if viewOnly {
					want = append(bytes.Clone(first.Bytes()), pictures.Bytes()...)
				}
				waitFor(t, "the browser's messages", func() bool { return len(rt.received()) >= len(want) })
				if got := rt.received(); !bytes.Equal(got, want) {
					t.Fatalf("the VNC server got %v, want %v", got, want)
				}
				if !viewOnly {
					ws.Close()
					r.waitReleased(s.ID())
					return
				}
				// A message type the filter does not know.
				if _, err := stream.Write([]byte{200, 0, 0, 0}); err != nil {
					t.Fatal(err)
				}
				expectClose(t, ws, websocket.ClosePolicyViolation, "message not allowed on a view-only console")
				line := r.endLine(s.ID())
				if line["reason"] != "message refused on a view-only console" || line["dropped_input"] != int64(3) {
					t.Errorf("end line %v, want the refusal and 3 dropped", line)
				}
			})
		}
	}
}

// TestBrowserHandshakeFailures: a browser that breaks or does not finish
// the RFB handshake the proxy offers is closed with 1002, and one that
// closes during it gets its close echoed.
func TestBrowserHandshakeFailures(t *testing.T) {
	cases := []struct {
		name  string
		steps func(ws *websocket.Conn) error
		code  int
		text  string
	}{
		{
			name:  "no answer",
			steps: func(*websocket.Conn) error { return nil },
			code:  websocket.CloseProtocolError, text: "RFB handshake timed out",
		},
		{
			name: "not RFB",
			steps: func(ws *websocket.Conn) error {
				return ws.WriteMessage(websocket.BinaryMessage, []byte("HTTP/1.1 200"))
			},
			code: websocket.CloseProtocolError, text: "RFB handshake failed",
		},
		{
			name: "security type not offered",
			steps: func(ws *websocket.Conn) error {
				if err := ws.WriteMessage(websocket.BinaryMessage, []byte("RFB 003.008\n")); err != nil {
					return err
				}
				return ws.WriteMessage(websocket.BinaryMessage, []byte{rfb.SecurityVNCAuth})
			},
			code: websocket.CloseProtocolError, text: "RFB handshake failed",
		},
		{
			name: "text message",
			steps: func(ws *websocket.Conn) error {
				return ws.WriteMessage(websocket.TextMessage, []byte("RFB 003.008\n"))
			},
			code: websocket.CloseProtocolError, text: "RFB handshake failed",
		},
		{
			name: "browser closes",
			steps: func(ws *websocket.Conn) error {
				return ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(wait))
			},
			code: websocket.CloseNormalClosure, text: "",
		},
	}
	rt := startRFBTarget(t)
	r := newRig(t, rigOptions{transport: overWS, target: rt.addr, prepare: loginWith(""), config: func(c *console.Config) {
		c.HandshakeTimeout = 300 * time.Millisecond
	}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ws, s := r.open()
			if err := c.steps(ws); err != nil {
				t.Fatal(err)
			}
			expectClose(t, ws, c.code, c.text)
			r.waitReleased(s.ID())
		})
	}
	select {
	case <-rt.inits:
		t.Error("a ClientInit reached the VNC server from a failed handshake")
	default:
	}
}

// TestRFB33Browser: a browser that answers with RFB 3.3 gets the security
// type the 3.3 way, and the console runs.
func TestRFB33Browser(t *testing.T) {
	rt := startRFBTarget(t)
	r := newRig(t, rigOptions{transport: overWS, target: rt.addr, prepare: loginWith("")})
	ws, s := r.open()
	_ = ws.SetReadDeadline(time.Now().Add(wait))
	si, err := rfb.ClientHandshakeVersion(wsstream.New(ws), "", 3)
	if err != nil {
		t.Fatal(err)
	}
	if si.Minor != 3 || si.Name != "fake" {
		t.Fatalf("ServerInit %+v", si)
	}
	select {
	case shared := <-rt.inits:
		if shared != 1 {
			t.Errorf("ClientInit shared=%d, want the browser's 1", shared)
		}
	case <-time.After(wait):
		t.Fatal("no ClientInit reached the VNC server")
	}
	ws.Close()
	r.waitReleased(s.ID())
}
