package rfb

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"RFB 003.008\n", 3, 8, true},
		{"RFB 003.003\n", 3, 3, true},
		{"RFB 003.007\n", 3, 7, true},
		{"RFB 003.889\n", 3, 889, true}, // Apple Remote Desktop
		{"RFB 004.001\n", 4, 1, true},   // RealVNC
		{"RFB 000.000\n", 0, 0, true},
		{"RFB 003.008", 0, 0, false},
		{"RFB 003.008\n\x00", 0, 0, false},
		{"RFB 003.008\r", 0, 0, false},
		{"RFB 03.0008\n", 0, 0, false},
		{"RFB 003,008\n", 0, 0, false},
		{"rfb 003.008\n", 0, 0, false},
		{"RFB -03.008\n", 0, 0, false},
		{"RFB 003.00a\n", 0, 0, false},
		{"RFB  03.008\n", 0, 0, false},
		{"SSH-2.0-Open", 0, 0, false},
		{"HTTP/1.1 400", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tt := range tests {
		major, minor, err := ParseVersion([]byte(tt.in))
		if tt.ok != (err == nil) || major != tt.major || minor != tt.minor {
			t.Errorf("ParseVersion(%q) = %d, %d, %v", tt.in, major, minor, err)
		}
		if err != nil && !errors.Is(err, ErrNotRFB) {
			t.Errorf("ParseVersion(%q) error %v is not ErrNotRFB", tt.in, err)
		}
	}
}

func TestParseVersionAllocs(t *testing.T) {
	good, bad := []byte("RFB 003.008\n"), []byte("HTTP/1.1 200")
	n := testing.AllocsPerRun(100, func() {
		_, _, _ = ParseVersion(good)
		_, _, _ = ParseVersion(bad)
	})
	if n != 0 {
		t.Errorf("ParseVersion allocates %v times per call", n)
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"RFB 003.008\n", "RFB 003.003\n", "RFB 003.889\n", "RFB 003.00x\n", "GET / HTTP/1.1", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		major, minor, err := ParseVersion(b)
		if err != nil {
			if major != 0 || minor != 0 {
				t.Fatalf("error with non-zero version %d.%d", major, minor)
			}
			return
		}
		// Whatever parses is exactly the canonical greeting of its numbers.
		if got := AppendVersion(nil, major, minor); !bytes.Equal(got, b) {
			t.Fatalf("ParseVersion(%q) = %d.%d, which formats as %q", b, major, minor, got)
		}
	})
}

func TestPixelFormatRoundTrip(t *testing.T) {
	pf := PixelFormat{BitsPerPixel: 16, Depth: 16, BigEndian: true, TrueColour: true,
		RedMax: 31, GreenMax: 63, BlueMax: 31, RedShift: 11, GreenShift: 5, BlueShift: 0}
	b := pf.Marshal()
	if got := UnmarshalPixelFormat(b[:]); got != pf {
		t.Fatalf("round trip: got %+v, want %+v", got, pf)
	}
	// White and a mid colour in RGB565 big-endian.
	if r, g, bl := pf.Pixel([]byte{0xff, 0xff}); r != 255 || g != 255 || bl != 255 {
		t.Errorf("white decodes as %d,%d,%d", r, g, bl)
	}
	if r, g, bl := pf.Pixel([]byte{0xf8, 0x00}); r != 255 || g != 0 || bl != 0 {
		t.Errorf("red decodes as %d,%d,%d", r, g, bl)
	}
}
