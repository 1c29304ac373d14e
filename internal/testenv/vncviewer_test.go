package testenv_test

import (
	"testing"

	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// An empty Xvfb screen is black and has the size asked for: the base of
// every viewer test's pixel checks.
func TestXvfbScreenshot(t *testing.T) {
	display := testenv.StartXvfb(t, 320, 200)
	img := testenv.Screenshot(t, display)
	if b := img.Bounds(); b.Dx() != 320 || b.Dy() != 200 {
		t.Fatalf("screenshot is %dx%d, want 320x200", b.Dx(), b.Dy())
	}
	r, g, b, _ := img.At(160, 100).RGBA()
	if r != 0 || g != 0 || b != 0 {
		t.Errorf("pixel (160,100) is %d,%d,%d, want black", r>>8, g>>8, b>>8)
	}
}
