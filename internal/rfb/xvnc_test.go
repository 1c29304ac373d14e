package rfb_test

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	return testenv.Dial(t, addr, 30*time.Second)
}

// fullUpdate asks for the whole screen in PixelFormat32 and Raw, and reads
// updates until every pixel has been covered.
func fullUpdate(t *testing.T, c net.Conn, si rfb.ServerInit) *rfb.Framebuffer {
	t.Helper()
	if err := rfb.SetPixelFormat32(c); err != nil {
		t.Fatal(err)
	}
	if err := rfb.SetEncodings(c, rfb.EncodingRaw, rfb.EncodingDesktopSize); err != nil {
		t.Fatal(err)
	}
	if err := rfb.RequestUpdate(c, false, 0, 0, uint16(si.Width), uint16(si.Height)); err != nil {
		t.Fatal(err)
	}
	fb := rfb.NewFramebuffer(si.Width, si.Height)
	covered := 0
	for covered < si.Width*si.Height {
		rects, err := rfb.ReadFramebufferUpdate(c, rfb.PixelFormat32)
		if err != nil {
			t.Fatalf("reading update: %v", err)
		}
		for _, r := range rects {
			if r.Encoding == rfb.EncodingRaw {
				covered += r.Width * r.Height
			}
		}
		fb.Apply(rects)
		if covered < si.Width*si.Height {
			if err := rfb.RequestUpdate(c, true, 0, 0, uint16(si.Width), uint16(si.Height)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return fb
}

func TestClientAgainstXvnc(t *testing.T) {
	addr := testenv.StartXvnc(t)
	c := dial(t, addr)
	si, err := rfb.ClientHandshake(c, "")
	if err != nil {
		t.Fatalf("handshake with Xvnc: %v", err)
	}
	if si.Width != 800 || si.Height != 600 || si.Minor != 8 || si.Security != rfb.SecurityNone {
		t.Fatalf("ServerInit %+v, want 800x600 over 3.8 with security None", si)
	}
	if !si.PixelFormat.TrueColour || si.PixelFormat.Depth != 24 {
		t.Errorf("pixel format %+v, want depth 24 true colour", si.PixelFormat)
	}
	fullUpdate(t, c, si)
}

func TestClientAgainstXvncVNCAuth(t *testing.T) {
	vncpasswd := testenv.Require(t, "vncpasswd", "tigervnc-tools")
	pwfile := filepath.Join(t.TempDir(), "passwd")
	cmd := exec.Command(vncpasswd, "-f")
	cmd.Stdin = strings.NewReader("s3cret\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("vncpasswd -f: %v", err)
	}
	if err := os.WriteFile(pwfile, out, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testenv.StartXvnc(t, "-SecurityTypes", "VncAuth", "-PasswordFile", pwfile)

	si, err := rfb.ClientHandshake(dial(t, addr), "s3cret")
	if err != nil {
		t.Fatalf("handshake with the right password: %v", err)
	}
	if si.Security != rfb.SecurityVNCAuth || si.Width != 800 {
		t.Fatalf("ServerInit %+v", si)
	}
	_, err = rfb.ClientHandshake(dial(t, addr), "wrong")
	if !errors.Is(err, rfb.ErrAuthFailed) {
		t.Fatalf("handshake with a wrong password: %v, want ErrAuthFailed", err)
	}
}
