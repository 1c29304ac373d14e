package rfbproxy

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// browser is a scripted browser: Read returns its bytes, Write collects
// what the proxy sends.
type browser struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (b *browser) Read(p []byte) (int, error)  { return b.in.Read(p) }
func (b *browser) Write(p []byte) (int, error) { return b.out.Write(p) }

func TestAccept(t *testing.T) {
	cases := []struct {
		name      string
		in        []byte
		wantOut   []byte
		wantMinor int
		shared    bool
	}{
		{"3.8", []byte("RFB 003.008\n\x01\x01"), []byte("RFB 003.008\n\x01\x01\x00\x00\x00\x00"), 8, true},
		{"3.8 exclusive", []byte("RFB 003.008\n\x01\x00"), []byte("RFB 003.008\n\x01\x01\x00\x00\x00\x00"), 8, false},
		{"3.7: no SecurityResult for None", []byte("RFB 003.007\n\x01\x01"), []byte("RFB 003.008\n\x01\x01"), 7, true},
		{"3.3: the server names the type", []byte("RFB 003.003\n\x01"), []byte("RFB 003.008\n\x00\x00\x00\x01"), 3, true},
		{"3.5 is 3.3", []byte("RFB 003.005\n\x01"), []byte("RFB 003.008\n\x00\x00\x00\x01"), 3, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := &browser{in: bytes.NewReader(c.in)}
			shared, minor, err := Accept(b)
			if err != nil {
				t.Fatal(err)
			}
			if shared != c.shared || minor != c.wantMinor {
				t.Errorf("shared %v minor %d, want %v %d", shared, minor, c.shared, c.wantMinor)
			}
			if !bytes.Equal(b.out.Bytes(), c.wantOut) {
				t.Errorf("sent %q, want %q", b.out.Bytes(), c.wantOut)
			}
		})
	}
}

func TestAcceptRefuses(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"not RFB", []byte("GET / HTTP/1.1\r\n"), ErrBrowser},
		{"RFB 4", []byte("RFB 004.001\n"), ErrBrowser},
		{"a type not offered", []byte("RFB 003.008\n\x02"), ErrBrowser},
		{"gone after the version", []byte("RFB 003.008\n"), io.EOF},
		{"gone before ClientInit", []byte("RFB 003.008\n\x01"), io.EOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := Accept(&browser{in: bytes.NewReader(c.in)})
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
		})
	}
}

func FuzzAccept(f *testing.F) {
	f.Add([]byte("RFB 003.008\n\x01\x01"))
	f.Add([]byte("RFB 003.003\n\x00"))
	f.Add([]byte("RFB 003.007\n\x01\x01"))
	f.Fuzz(func(t *testing.T, in []byte) {
		b := &browser{in: bytes.NewReader(in)}
		_, _, err := Accept(b)
		if err == nil && b.in.Len() != len(in)-14 && b.in.Len() != len(in)-13 {
			t.Fatalf("handshake read %d bytes", len(in)-b.in.Len())
		}
		if b.out.Len() > 32 {
			t.Fatalf("sent %d bytes", b.out.Len())
		}
	})
}
