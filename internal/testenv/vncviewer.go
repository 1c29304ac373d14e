package testenv

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/vncdemo"
)

// StartXvfb starts a headless X server (Debian xvfb) with one screen of
// width x height at 24 bits and returns its display, such as ":3". Xvfb
// picks a free display number itself (-displayfd), so parallel tests and
// other X servers on the machine do not collide.
func StartXvfb(t testing.TB, width, height int) string {
	t.Helper()
	bin := Require(t, "Xvfb", "xvfb")
	dir := t.TempDir()
	numberFile := filepath.Join(dir, "display")
	// -displayfd writes the display number to a file descriptor once the
	// server accepts clients; the shell only opens that descriptor on a
	// file and replaces itself with Xvfb, so the process stopped at the
	// end is Xvfb itself.
	p := Start(t, "sh", "-c", `exec "$0" -displayfd 3 -screen 0 "$1" -nolisten tcp 3>"$2"`,
		bin, fmt.Sprintf("%dx%dx24", width, height), numberFile)
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(numberFile)
		if s := strings.TrimSpace(string(b)); strings.HasSuffix(string(b), "\n") && s != "" {
			if _, err := strconv.Atoi(s); err != nil {
				t.Fatalf("Xvfb wrote display %q", s)
			}
			return ":" + s
		}
		select {
		case <-p.Done():
			t.Fatalf("Xvfb exited before it served a display:\n%s", p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("Xvfb served no display after 15s:\n%s", p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Screenshot returns the whole screen of an X display, taken with
// ImageMagick's import (Debian imagemagick).
func Screenshot(t testing.TB, display string) image.Image {
	t.Helper()
	bin := Require(t, "import", "imagemagick")
	var out, errOut bytes.Buffer
	cmd := exec.Command(bin, "-display", display, "-window", "root", "png:-")
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("screenshot of %s: %v\n%s", display, err, errOut.String())
	}
	img, err := png.Decode(&out)
	if err != nil {
		t.Fatalf("decoding the screenshot of %s: %v", display, err)
	}
	return img
}

// WaitScreen takes screenshots of display until ok accepts one or timeout
// passes; it returns the last one and whether ok accepted it.
func WaitScreen(t testing.TB, display string, timeout time.Duration, ok func(image.Image) bool) (image.Image, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		img := Screenshot(t, display)
		if ok(img) {
			return img, true
		}
		if time.Now().After(deadline) {
			return img, false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// SavePNG writes img to path, for a failing test to leave the picture it
// saw behind.
func SavePNG(t testing.TB, path string, img image.Image) {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, b.String())
}

// VNCViewer is how to run TigerVNC's vncviewer (Debian tigervnc-viewer,
// checked with 1.12) against a VeNCrypt X509Plain server without a person
// at the screen.
//
// What the viewer does, as seen through the proxy's native door:
//   - It sends the host part of "host::port" as the TLS server name, an IP
//     address included (GnuTLS sends "127.0.0.1", which RFC 6066 forbids
//     and Go's client never does): a server must serve its certificate for
//     any name.
//   - Its default -SecurityTypes list starts with X509Plain, so it needs no
//     flag against a server that offers only that; Start passes
//     "-SecurityTypes X509Plain" anyway, so that it never settles for less.
//   - It checks the certificate after the TLS handshake and before it sends
//     its credentials: against -X509CA (default ~/.vnc/x509_ca.pem) and the
//     system store, and the name against the SANs. An unknown issuer, a
//     name mismatch or an expired certificate opens a yes/no dialog; so does
//     a missing VNC_USERNAME or VNC_PASSWORD (a login dialog). The server
//     sees a client that went quiet before its credentials.
//   - A refusal is logged as "CConn: Authentication failure: <reason>" (3.8)
//     and, with -AlertOnFatalError=0 -ReconnectOnError=0, the viewer exits
//     with status 0; without those flags it shows the error in a dialog and
//     offers to reconnect.
//   - "TLS: Could not load user specified certificate revocation list" is
//     logged whenever ~/.vnc/x509_crl.pem does not exist; it is harmless.
type VNCViewer struct {
	// Display is the X display to show on (StartXvfb).
	Display string
	// CA is the PEM file of the CA the server certificate must chain to
	// (-X509CA). Without it the viewer trusts the system store only and
	// asks about an unknown issuer in a dialog.
	CA string
	// Username and Password go in VNC_USERNAME and VNC_PASSWORD; the viewer
	// takes them only when both are set, and opens a dialog otherwise.
	Username, Password string
	// Args are more viewer parameters, such as "-ViewOnly".
	Args []string
}

// Start runs the viewer against server ("host::port") until the test ends.
// Its log (stderr) is in the process output; HOME is a fresh directory so
// that no saved settings or known-hosts file of the machine's user play
// in.
//
// The viewer verifies the certificate against the name in server: an IP
// address must be in the certificate's IP SANs, a name in its DNS SANs,
// or the viewer asks "Certificate hostname mismatch" in a yes/no dialog,
// which nobody answers here. Dialogs on a fatal error and the offer to
// reconnect are turned off, so a failure ends the process with its reason
// in the log ("Authentication failure: <reason>").
func (v VNCViewer) Start(t testing.TB, server string) *Process {
	t.Helper()
	bin := Require(t, "vncviewer", "tigervnc-viewer")
	home := t.TempDir()
	env := append(os.Environ(),
		"HOME="+home,
		"DISPLAY="+v.Display,
		"VNC_USERNAME="+v.Username,
		"VNC_PASSWORD="+v.Password,
	)
	args := []string{
		"-SecurityTypes", "X509Plain",
		"-AlertOnFatalError=0", "-ReconnectOnError=0",
		// Near the top-left corner of the screen (there is no window
		// manager; the window still lands a few pixels off), at the
		// desktop's own size, in full colour, so that a pixel of the
		// remote desktop is a pixel of the screenshot: a test finds the
		// picture by a known colour and checks the rest relative to it.
		"-geometry", "+0+0", "-RemoteResize=0", "-AutoSelect=0", "-FullColor",
	}
	if v.CA != "" {
		args = append(args, "-X509CA", v.CA)
	}
	args = append(args, v.Args...)
	args = append(args, server)
	return StartEnv(t, env, bin, args...)
}

// VNCDemoOnScreen finds vncdemo's picture on a screenshot: its red top-left
// corner square, then the other three corners and the background at their
// places relative to it (see vncdemo's package doc).
func VNCDemoOnScreen(img image.Image) bool {
	is := func(x, y int, r, g, b uint32) bool {
		pr, pg, pb, _ := img.At(x, y).RGBA()
		return pr>>8 == r && pg>>8 == g && pb>>8 == b
	}
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y-vncdemo.DefaultHeight; y++ {
		for x := bounds.Min.X; x < bounds.Max.X-vncdemo.DefaultWidth; x++ {
			if !is(x, y, 255, 0, 0) {
				continue
			}
			const w, h = vncdemo.DefaultWidth, vncdemo.DefaultHeight
			return is(x+31, y+31, 255, 0, 0) &&
				is(x+w-32, y, 0, 255, 0) && is(x+w-1, y+31, 0, 255, 0) &&
				is(x, y+h-32, 0, 0, 255) && is(x+31, y+h-1, 0, 0, 255) &&
				is(x+w-32, y+h-32, 255, 255, 255) && is(x+w-1, y+h-1, 255, 255, 255) &&
				is(x+40, y+16, 32, 32, 32)
		}
	}
	return false
}
