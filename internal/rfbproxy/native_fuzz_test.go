package rfbproxy

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// nativeFuzzConn plays a native viewer whose every byte comes from a
// fuzzer, and counts what the proxy sends it.
type nativeFuzzConn struct {
	r    *bytes.Reader
	sent int
}

func (c *nativeFuzzConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *nativeFuzzConn) Write(p []byte) (int, error)      { c.sent += len(p); return len(p), nil }
func (c *nativeFuzzConn) Close() error                     { return nil }
func (c *nativeFuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *nativeFuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *nativeFuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *nativeFuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *nativeFuzzConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzAcceptNative: whatever a viewer sends before and into the TLS
// handshake, AcceptNative returns (no panic, no hang: the input ends),
// sends no more than the handshake's own bytes, and blames the client
// for anything but a connection that ended.
func FuzzAcceptNative(f *testing.F) {
	pki := testenv.NewPKI(f)
	pair, err := tls.LoadX509KeyPair(pki.ServerCert, pki.ServerKey)
	if err != nil {
		f.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}}

	upToTLS := "RFB 003.008\n\x13\x00\x02\x00\x00\x01\x06"
	f.Add([]byte(upToTLS))
	f.Add([]byte(upToTLS + "\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"))
	f.Add([]byte("RFB 003.007\n\x13\x00\x02\x00\x00\x01\x04"))
	f.Add([]byte("RFB 003.003\n"))
	f.Add([]byte("RFB 003.889\n\x13\x00\x01"))
	f.Add([]byte("RFB 003.008\n\x01"))
	f.Add([]byte("RFB 004.000\n"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		conn := &nativeFuzzConn{r: bytes.NewReader(in)}
		nc, err := AcceptNative(conn, cfg, time.Minute)
		if err == nil {
			// Only a real TLS client gets this far; a fuzzer would have to
			// forge a handshake.
			if nc.TLS == nil || nc.Minor < 7 {
				t.Fatalf("accepted %v", nc)
			}
			return
		}
		if !errors.Is(err, ErrClient) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("error %v neither blames the client nor says the input ended", err)
		}
		// Before TLS the proxy sends at most 12+2+2+6+1 bytes or a short
		// refusal; the TLS server's first flight is a few KiB.
		if conn.sent > 8<<10 {
			t.Fatalf("sent %d bytes", conn.sent)
		}
	})
}

// FuzzNativeCredentials: VeNCrypt Plain credentials are either a password
// read exactly as sent or an error that holds none of the bytes sent, and
// nothing bigger than the bound is ever allocated.
func FuzzNativeCredentials(f *testing.F) {
	plain := func(user, pass string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(user)))
		b = binary.BigEndian.AppendUint32(b, uint32(len(pass)))
		return append(append(b, user...), pass...)
	}
	f.Add(plain("user", "token-secret"))
	f.Add(plain("", ""))
	f.Add(plain("u", strings.Repeat("p", rfb.MaxCredentialLen)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 4, 'u'})
	f.Fuzz(func(t *testing.T, in []byte) {
		password, err := readPlainCredentials(bytes.NewReader(in))
		if err != nil {
			// Short inputs are left out: a byte or two may be in any text.
			if len(in) >= 8+12 && strings.Contains(err.Error(), string(in[8:])) {
				t.Fatalf("error %q holds the credentials sent", err)
			}
			return
		}
		ulen := binary.BigEndian.Uint32(in[0:])
		plen := binary.BigEndian.Uint32(in[4:])
		if ulen > rfb.MaxCredentialLen || plen > rfb.MaxCredentialLen {
			t.Fatalf("accepted lengths %d and %d", ulen, plen)
		}
		if want := string(in[8+ulen : 8+ulen+plen]); password != want {
			t.Fatalf("password %q, want %q", password, want)
		}
	})
}
