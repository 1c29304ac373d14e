package rfbproxy

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// serverConn plays a VNC server whose every byte comes from a fuzzer; what
// the proxy writes is discarded.
type serverConn struct {
	r *bytes.Reader
}

func (c serverConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c serverConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c serverConn) Close() error                     { return nil }
func (c serverConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c serverConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c serverConn) SetDeadline(time.Time) error      { return nil }
func (c serverConn) SetReadDeadline(time.Time) error  { return nil }
func (c serverConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzLogin: whatever a VNC server sends, Login returns (no panic, no
// hang, no read past what was sent) and its error never holds a
// credential.
func FuzzLogin(f *testing.F) {
	f.Add([]byte("RFB 003.008\n\x02\x02\x13"), uint8(0))
	f.Add([]byte("RFB 003.008\n\x01\x02"+strings.Repeat("\x00", 16)+"\x00\x00\x00\x01\xff\xff\xff\xff"), uint8(1))
	f.Add([]byte("RFB 003.008\n\x01\x13\x00\x02\x00\x02\x00\x00\x01\x04\x01"), uint8(2))
	f.Add([]byte("RFB 003.008\n\x01\x13\x00\x02\x00\x01\x00\x00\x01\x00\x01"), uint8(3))
	f.Add([]byte("RFB 003.003\n\x00\x00\x00\x00\x00\x00\x00\x04oops"), uint8(0))
	f.Add([]byte("RFB 003.007\n\x00\x00\x00\x00\x10"), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		if len(data) < 12 {
			return
		}
		cred := Credentials{}
		if which&1 != 0 {
			cred.Password = "pw-secret"
		}
		if which&2 != 0 {
			cred.Username = "user-secret"
			cred.Password = "pw-secret"
			cred.TLS = &tls.Config{InsecureSkipVerify: true}
		}
		cred.RequireTLS = which&4 != 0 && cred.TLS != nil
		conn := serverConn{r: bytes.NewReader(data[12:])}
		_, _, err := Login(conn, data[:12], cred)
		if err != nil && (strings.Contains(err.Error(), "pw-secret") || strings.Contains(err.Error(), "user-secret")) {
			t.Fatalf("error holds a credential: %v", err)
		}
		_, _ = io.Copy(io.Discard, conn.r)
	})
}
