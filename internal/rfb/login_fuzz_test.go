package rfb

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// serverConn plays a VNC server whose every byte comes from a fuzzer: the
// fuzzer's bytes, then one byte repeated without end, so that a read the
// handshake did not bound would never end. It counts what the client
// reads and discards what it writes.
type serverConn struct {
	r    io.Reader
	read int
}

func (c *serverConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}
func (c *serverConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *serverConn) Close() error                     { return nil }
func (c *serverConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *serverConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *serverConn) SetDeadline(time.Time) error      { return nil }
func (c *serverConn) SetReadDeadline(time.Time) error  { return nil }
func (c *serverConn) SetWriteDeadline(time.Time) error { return nil }

// endless reads as the same byte forever.
type endless byte

func (e endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(e)
	}
	return len(p), nil
}

// The most the handshake reads from a server: its greeting, 255
// security types (or a refusal and its reason), VeNCrypt's version, status,
// 255 subtypes and acknowledgement, a VNC authentication challenge, and a
// failed SecurityResult with its reason.
const maxLoginRead = VersionLen + 1 + 255 + (2 + 1 + 1 + 4*255 + 1) + 16 + 4 + 4 + MaxReasonLen

// maxTLSRead allows for crypto/tls's own bounds when a login starts TLS
// (records of at most about 16 KiB, handshake messages of at most 256 KiB):
// a fuzzer cannot complete a handshake, but it can make one read a while.
const maxTLSRead = 1 << 20

// FuzzLogin: whatever a VNC server sends, the handshake returns, the
// proxy's (Login) or the test client's (an empty password tried, an older
// version offered): no panic, no read past its bounds, and an error that
// never holds a credential.
func FuzzLogin(f *testing.F) {
	f.Add([]byte("RFB 003.008\n\x02\x02\x13"), uint8(0), byte(0))
	f.Add([]byte("RFB 003.008\n\x01\x02"+strings.Repeat("\x00", 16)+"\x00\x00\x00\x01\xff\xff\xff\xff"), uint8(1), byte(0))
	f.Add([]byte("RFB 003.008\n\x01\x13\x00\x02\x00\x02\x00\x00\x01\x04\x01"), uint8(2), byte(0x16))
	f.Add([]byte("RFB 003.008\n\x01\x13\x00\x02\x00\x01\x00\x00\x01\x00\x01"), uint8(3), byte(0))
	f.Add([]byte("RFB 003.003\n\x00\x00\x00\x00\x00\x00\x00\x04oops"), uint8(0), byte(0))
	f.Add([]byte("RFB 003.007\n\x00\x00\x00\x00\x10"), uint8(0), byte(0))
	f.Add([]byte("RFB 003.008\n\x00"), uint8(0), byte(0x0f))
	f.Add([]byte("RFB 003.008\n\x01\x02"), uint8(8), byte(0xff))
	f.Add([]byte("RFB 003.008\n"), uint8(16), byte(0xff))
	f.Add([]byte("RFB 003.003\n\x00\x00\x00\x02"), uint8(40), byte(0x01))
	f.Fuzz(func(t *testing.T, data []byte, which uint8, tail byte) {
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
		conn := &serverConn{r: io.MultiReader(bytes.NewReader(data), endless(tail))}
		var err error
		if which&8 != 0 {
			o := HandshakeOptions{Password: cred.Password}
			switch {
			case which&16 != 0:
				o.MaxMinor = 7
			case which&32 != 0:
				o.MaxMinor = 3
			}
			_, err = ClientLogin(conn, o)
		} else {
			greeting := make([]byte, VersionLen)
			_, _ = io.ReadFull(conn, greeting)
			_, _, err = Login(conn, greeting, cred)
		}
		if err != nil && (strings.Contains(err.Error(), "pw-secret") || strings.Contains(err.Error(), "user-secret")) {
			t.Fatalf("error holds a credential: %v", err)
		}
		limit := maxLoginRead
		if cred.TLS != nil {
			limit += maxTLSRead
		}
		if conn.read > limit {
			t.Fatalf("read %d bytes from the server, more than %d", conn.read, limit)
		}
	})
}
