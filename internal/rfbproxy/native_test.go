package rfbproxy_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbproxy"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/internal/vncdemo"
)

const nativeToken = "tok-0123456789abcdef"

// nativeServerTLS is what the native listener gets from Caddy: the
// server certificate, whatever name the client asks for.
func nativeServerTLS(t testing.TB, p *testenv.PKI) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}

// viewerTLS is a native viewer's TLS: it trusts the PKI's CA and asks for
// serverName, localhost when empty.
func viewerTLS(t *testing.T, p *testenv.PKI, serverName string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(p.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	if serverName == "" {
		serverName = "localhost"
	}
	return &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}
}

type nativeAccepted struct {
	client *rfbproxy.NativeClient
	err    error
	took   time.Duration
}

// serveNative accepts one connection on a loopback port and runs
// AcceptNative on it under a deadline and a prompt timeout, as the
// listener will; the outcome arrives on the channel. The server's
// connection closes on an error, as the listener will close it, or when
// the test ends.
func serveNative(t *testing.T, cfg *tls.Config, deadline, prompt time.Duration) (addr string, accepted <-chan nativeAccepted) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan nativeAccepted, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			ch <- nativeAccepted{err: err}
			return
		}
		t.Cleanup(func() { c.Close() })
		start := time.Now()
		_ = c.SetDeadline(start.Add(deadline))
		nc, err := rfbproxy.AcceptNative(c, cfg, prompt)
		took := time.Since(start)
		if err != nil {
			c.Close() // as the listener will
		}
		ch <- nativeAccepted{client: nc, err: err, took: took}
	}()
	return l.Addr().String(), ch
}

func waitAccepted(t *testing.T, ch <-chan nativeAccepted) nativeAccepted {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("AcceptNative did not return within 10s")
		return nativeAccepted{}
	}
}

// nativeViewer is the client side written out step by step, so that a test can
// stop or go wrong at any step.
type nativeViewer struct {
	t    *testing.T
	conn net.Conn // the TCP connection, then the TLS one
}

func dialNativeViewer(t *testing.T, addr string) *nativeViewer {
	return &nativeViewer{t: t, conn: testenv.Dial(t, addr, 10*time.Second)}
}

func (v *nativeViewer) send(b []byte) {
	v.t.Helper()
	if _, err := v.conn.Write(b); err != nil {
		v.t.Fatalf("sending %q: %v", b, err)
	}
}

func (v *nativeViewer) expect(want []byte) {
	v.t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(v.conn, got); err != nil {
		v.t.Fatalf("reading %q: %v", want, err)
	}
	if !bytes.Equal(got, want) {
		v.t.Fatalf("received %q, want %q", got, want)
	}
}

// expectEnd reads until the server closes the connection and checks that
// nothing more came.
func (v *nativeViewer) expectEnd() {
	v.t.Helper()
	rest, err := io.ReadAll(v.conn)
	if err != nil && !errors.Is(err, io.EOF) && !connectionReset(err) {
		v.t.Fatalf("waiting for the end: %v", err)
	}
	if len(rest) > 0 {
		v.t.Fatalf("received %q after the last step, want the end", rest)
	}
}

func connectionReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// preTLS runs the steps up to the TLS handshake as a 3.minor viewer.
func (v *nativeViewer) preTLS(minor int) {
	v.t.Helper()
	v.expect([]byte("RFB 003.008\n"))
	v.send(rfb.AppendVersion(nil, 3, minor))
	v.expect([]byte{1, rfb.SecurityVeNCrypt})
	v.send([]byte{rfb.SecurityVeNCrypt})
	v.expect([]byte{0, 2})
	v.send([]byte{0, 2})
	v.expect([]byte{0, 1, 0, 0, 1, 6}) // ok, one subtype, X509Plain
	v.send(binary.BigEndian.AppendUint32(nil, rfb.VeNCryptX509Plain))
	v.expect([]byte{1})
}

func (v *nativeViewer) startTLS(cfg *tls.Config) {
	v.t.Helper()
	tc := tls.Client(v.conn, cfg)
	if err := tc.Handshake(); err != nil {
		v.t.Fatalf("TLS handshake: %v", err)
	}
	v.conn = tc
}

func nativePlainCredentials(user, password string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(user)))
	b = binary.BigEndian.AppendUint32(b, uint32(len(password)))
	return append(append(b, user...), password...)
}

func TestAcceptNative(t *testing.T) {
	pki := testenv.NewPKI(t)
	for _, c := range []struct {
		name      string
		version   int // what the viewer answers: 3.version
		wantMinor int
	}{
		{"3.8", 8, 8},
		{"3.7", 7, 7},
		{"3.889 (macOS) is 3.8", 889, 8},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, accepted := serveNative(t, nativeServerTLS(t, pki), 10*time.Second, 0)
			v := dialNativeViewer(t, addr)
			v.preTLS(c.version)
			v.startTLS(viewerTLS(t, pki, "localhost"))
			v.send(nativePlainCredentials("any user", nativeToken))

			a := waitAccepted(t, accepted)
			if a.err != nil {
				t.Fatal(a.err)
			}
			nc := a.client
			if nc.Token != nativeToken || nc.Minor != c.wantMinor {
				t.Fatalf("token %q minor %d, want %q %d", nc.Token, nc.Minor, nativeToken, c.wantMinor)
			}
			if s := fmt.Sprint(nc); strings.Contains(s, nativeToken) || !strings.Contains(s, `"localhost"`) {
				t.Errorf("String() = %q: want the server name and never the token", s)
			}
			if _, err := nc.ClientInit(); err == nil {
				t.Error("ClientInit before Admit succeeded")
			}
			if err := nc.Admit(); err != nil {
				t.Fatal(err)
			}
			if err := nc.Refuse("late"); err == nil {
				t.Error("Refuse after Admit succeeded")
			}
			v.expect([]byte{0, 0, 0, 0})
			v.send([]byte{1})
			shared, err := nc.ClientInit()
			if err != nil || !shared {
				t.Fatalf("ClientInit: shared %v, %v", shared, err)
			}
			// The session then runs over nc.TLS, both ways.
			v.send([]byte("after"))
			got := make([]byte, 5)
			if _, err := io.ReadFull(nc.TLS, got); err != nil || string(got) != "after" {
				t.Fatalf("relayed %q, %v", got, err)
			}
		})
	}
}

// A refusal is a SecurityResult failure; its reason reaches 3.8 viewers
// only (RFC 6143 7.1.3: 3.7 has no reason field).
func TestAcceptNativeRefuse(t *testing.T) {
	pki := testenv.NewPKI(t)
	failure := func(reason string) []byte {
		return append(binary.BigEndian.AppendUint32([]byte{0, 0, 0, 1}, uint32(len(reason))), reason...)
	}
	const reason = "unknown or expired token"
	long := strings.Repeat("x", 1023) + "é" // cut at 1 KiB, inside the é
	for _, c := range []struct {
		name   string
		minor  int
		reason string
		want   []byte
	}{
		{"3.8", 8, reason, failure(reason)},
		{"3.7", 7, reason, []byte{0, 0, 0, 1}},
		{"3.8, a reason over 1 KiB", 8, long, failure(long[:1023])},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, accepted := serveNative(t, nativeServerTLS(t, pki), 10*time.Second, 0)
			v := dialNativeViewer(t, addr)
			v.preTLS(c.minor)
			v.startTLS(viewerTLS(t, pki, "localhost"))
			v.send(nativePlainCredentials("", "wrong"))
			a := waitAccepted(t, accepted)
			if a.err != nil {
				t.Fatal(a.err)
			}
			if err := a.client.Refuse(c.reason); err != nil {
				t.Fatal(err)
			}
			if err := a.client.Admit(); err == nil {
				t.Error("Admit after Refuse succeeded")
			}
			a.client.TLS.Close()
			v.expect(c.want)
			v.expectEnd()
		})
	}
}

// Whatever name a viewer asks for (none, an IP address, an alias), the
// listener's certificate is what it gets; the name is kept for logs.
func TestAcceptNativeServerName(t *testing.T) {
	pki := testenv.NewPKI(t, "console.example")
	for _, name := range []string{"", "console.example", "127.0.0.1"} {
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			addr, accepted := serveNative(t, nativeServerTLS(t, pki), 10*time.Second, 0)
			v := dialNativeViewer(t, addr)
			v.preTLS(8)
			cfg := viewerTLS(t, pki, name)
			if name == "" {
				// No SNI at all, as from a viewer that connects by address
				// and sends none; Go's client then checks no name, and this
				// test checks only what the server saw.
				cfg.ServerName = ""
				cfg.InsecureSkipVerify = true
			}
			v.startTLS(cfg)
			v.send(nativePlainCredentials("u", nativeToken))
			a := waitAccepted(t, accepted)
			if a.err != nil {
				t.Fatal(a.err)
			}
			got := a.client.TLS.ConnectionState().ServerName
			want := name
			if net.ParseIP(name) != nil {
				want = "" // RFC 6066: an IP address is never sent as SNI
			}
			if got != want {
				t.Errorf("server name %q, want %q", got, want)
			}
		})
	}
}

func TestAcceptNativeRefusesClient(t *testing.T) {
	pki := testenv.NewPKI(t)
	x509None := binary.BigEndian.AppendUint32(nil, rfb.VeNCryptX509None)
	x509Plain := binary.BigEndian.AppendUint32(nil, rfb.VeNCryptX509Plain)
	failure := func(reason string) []byte {
		b := binary.BigEndian.AppendUint32([]byte{0, 0, 0, 1}, uint32(len(reason)))
		return append(b, reason...)
	}
	upToSubtype := func(v *nativeViewer) {
		v.expect([]byte("RFB 003.008\n"))
		v.send([]byte("RFB 003.008\n\x13\x00\x02"))
		v.expect([]byte{1, 19, 0, 2, 0, 1, 0, 0, 1, 6})
	}
	cases := []struct {
		name string
		run  func(v *nativeViewer)
		// what the viewer receives after its last step, before the end
		want []byte
	}{
		{"not RFB", func(v *nativeViewer) {
			v.expect([]byte("RFB 003.008\n"))
			v.send([]byte("GET / HTTP/1.1\r\n"))
		}, nil},
		{"RFB 4", func(v *nativeViewer) {
			v.expect([]byte("RFB 003.008\n"))
			v.send([]byte("RFB 004.000\n"))
		}, nil},
		{"RFB 3.3: told in a failure it can read", func(v *nativeViewer) {
			v.expect([]byte("RFB 003.008\n"))
			v.send([]byte("RFB 003.003\n"))
			v.expect([]byte{0, 0, 0, 0})
			var n [4]byte
			if _, err := io.ReadFull(v.conn, n[:]); err != nil {
				t.Fatal(err)
			}
			reason := make([]byte, binary.BigEndian.Uint32(n[:]))
			if _, err := io.ReadFull(v.conn, reason); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(reason), "3.7 or 3.8") {
				t.Errorf("reason %q", reason)
			}
		}, nil},
		{"security type None", func(v *nativeViewer) {
			v.expect([]byte("RFB 003.008\n"))
			v.send([]byte("RFB 003.008\n\x01"))
			v.expect([]byte{1, 19})
		}, failure("only VeNCrypt X509Plain is offered")},
		{"security type None, 3.7", func(v *nativeViewer) {
			v.expect([]byte("RFB 003.008\n"))
			v.send([]byte("RFB 003.007\n\x02"))
			v.expect([]byte{1, 19})
		}, []byte{0, 0, 0, 1}},
		{"VeNCrypt 0.1", func(v *nativeViewer) {
			v.expect([]byte("RFB 003.008\n"))
			v.send([]byte("RFB 003.008\n\x13\x00\x01"))
			v.expect([]byte{1, 19, 0, 2})
		}, []byte{0xff}},
		{"VeNCrypt 0.0 (none)", func(v *nativeViewer) {
			v.expect([]byte("RFB 003.008\n"))
			v.send([]byte("RFB 003.008\n\x13\x00\x00"))
			v.expect([]byte{1, 19, 0, 2})
		}, []byte{0xff}},
		{"subtype X509None", func(v *nativeViewer) {
			upToSubtype(v)
			v.send(x509None)
		}, []byte{0}},
		{"subtype Plain, no TLS", func(v *nativeViewer) {
			upToSubtype(v)
			v.send(binary.BigEndian.AppendUint32(nil, rfb.VeNCryptPlain))
		}, []byte{0}},
		{"not TLS", func(v *nativeViewer) {
			upToSubtype(v)
			v.send(x509Plain)
			v.expect([]byte{1})
			v.send([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			io.Copy(io.Discard, v.conn) // a TLS alert, then the end
		}, nil},
		{"viewer distrusts the certificate", func(v *nativeViewer) {
			upToSubtype(v)
			v.send(x509Plain)
			v.expect([]byte{1})
			tc := tls.Client(v.conn, &tls.Config{ServerName: "localhost"}) // system roots only
			if err := tc.Handshake(); err == nil {
				t.Fatal("handshake with an unknown CA succeeded")
			}
			io.Copy(io.Discard, v.conn) // the rest of the server's flight, then the end
		}, nil},
		{"a 4 GiB password", func(v *nativeViewer) {
			upToSubtype(v)
			v.send(x509Plain)
			v.expect([]byte{1})
			v.startTLS(viewerTLS(t, pki, "localhost"))
			v.send([]byte{0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 'u'})
		}, nil},
		{"a 4 GiB username", func(v *nativeViewer) {
			upToSubtype(v)
			v.send(x509Plain)
			v.expect([]byte{1})
			v.startTLS(viewerTLS(t, pki, "localhost"))
			v.send([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1})
		}, nil},
		{"a password of 1 KiB + 1", func(v *nativeViewer) {
			upToSubtype(v)
			v.send(x509Plain)
			v.expect([]byte{1})
			v.startTLS(viewerTLS(t, pki, "localhost"))
			v.send(nativePlainCredentials("u", strings.Repeat("x", 1025)))
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A generous deadline: every refusal must come long before it.
			addr, accepted := serveNative(t, nativeServerTLS(t, pki), 10*time.Second, 0)
			v := dialNativeViewer(t, addr)
			c.run(v)
			a := waitAccepted(t, accepted)
			if !errors.Is(a.err, rfbproxy.ErrClient) {
				t.Fatalf("error %v, want ErrClient", a.err)
			}
			if a.took > 5*time.Second {
				t.Errorf("refused after %v", a.took)
			}
			if strings.Contains(a.err.Error(), nativeToken) {
				t.Errorf("error holds the token: %v", a.err)
			}
			if c.want != nil {
				v.expect(c.want)
			}
			v.expectEnd()
		})
	}
}

// A viewer that stalls at any step before the TLS handshake is over ends
// AcceptNative within the caller's deadline, and one that stalls before
// its credentials within the prompt timeout, with the I/O error rather
// than ErrClient.
func TestAcceptNativeDeadline(t *testing.T) {
	pki := testenv.NewPKI(t)
	const (
		deadline = 300 * time.Millisecond
		prompt   = 700 * time.Millisecond
	)
	x509Plain := binary.BigEndian.AppendUint32(nil, rfb.VeNCryptX509Plain)
	steps := []struct {
		name string
		run  func(v *nativeViewer)
		// whether the stall is in the credentials step, where the prompt
		// timeout applies
		credentials bool
	}{
		{"silent", func(v *nativeViewer) {}, false},
		{"half a version", func(v *nativeViewer) { v.send([]byte("RFB 003")) }, false},
		{"no security type", func(v *nativeViewer) { v.send([]byte("RFB 003.008\n")) }, false},
		{"no VeNCrypt version", func(v *nativeViewer) { v.send([]byte("RFB 003.008\n\x13")) }, false},
		{"half a VeNCrypt version", func(v *nativeViewer) { v.send([]byte("RFB 003.008\n\x13\x00")) }, false},
		{"no subtype", func(v *nativeViewer) { v.send([]byte("RFB 003.008\n\x13\x00\x02")) }, false},
		{"no ClientHello", func(v *nativeViewer) { v.send(append([]byte("RFB 003.008\n\x13\x00\x02"), x509Plain...)) }, false},
		{"half a ClientHello", func(v *nativeViewer) {
			v.send(append([]byte("RFB 003.008\n\x13\x00\x02"), x509Plain...))
			v.send([]byte{0x16, 0x03, 0x01, 0x01, 0x00, 0x01})
		}, false},
		{"TLS never finished", func(v *nativeViewer) {
			// The viewer sends its ClientHello, reads the server's flight
			// and never answers: the server waits for the client's
			// Finished (in TLS 1.2 and 1.3 alike).
			v.preTLS(8)
			go tls.Client(&stallingConn{Conn: v.conn}, viewerTLS(t, pki, "localhost")).Handshake()
		}, false},
		{"no credentials", func(v *nativeViewer) {
			v.preTLS(8)
			v.startTLS(viewerTLS(t, pki, "localhost"))
		}, true},
		{"half the credentials", func(v *nativeViewer) {
			v.preTLS(8)
			v.startTLS(viewerTLS(t, pki, "localhost"))
			v.send(nativePlainCredentials("u", nativeToken)[:12])
		}, true},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			addr, accepted := serveNative(t, nativeServerTLS(t, pki), deadline, prompt)
			v := dialNativeViewer(t, addr)
			s.run(v)
			a := waitAccepted(t, accepted)
			if !errors.Is(a.err, os.ErrDeadlineExceeded) || errors.Is(a.err, rfbproxy.ErrClient) {
				t.Fatalf("error %v, want the deadline and not ErrClient", a.err)
			}
			limit := deadline
			if s.credentials {
				limit = prompt
				if a.took < prompt {
					t.Errorf("gave up on the credentials after %v, before the prompt timeout of %v", a.took, prompt)
				}
				if !strings.Contains(a.err.Error(), "credentials") && !strings.Contains(a.err.Error(), "Plain") {
					t.Errorf("error %v does not name the credentials step", a.err)
				}
			}
			if a.took > limit+time.Second {
				t.Errorf("returned after %v with a limit of %v", a.took, limit)
			}
		})
	}

	t.Run("gone", func(t *testing.T) {
		addr, accepted := serveNative(t, nativeServerTLS(t, pki), 10*time.Second, 0)
		v := dialNativeViewer(t, addr)
		v.send([]byte("RFB 003.008\n\x13"))
		v.conn.Close()
		a := waitAccepted(t, accepted)
		if a.err == nil || errors.Is(a.err, rfbproxy.ErrClient) {
			t.Fatalf("error %v, want an I/O error", a.err)
		}
	})
}

// stallingConn passes the TLS client's writes through until it has sent
// its second flight, and then swallows them, so that the server waits for
// a Finished that never comes.
type stallingConn struct {
	net.Conn
	writes int
}

func (c *stallingConn) Write(b []byte) (int, error) {
	c.writes++
	if c.writes > 1 {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func TestAcceptNativeNoCertificate(t *testing.T) {
	for _, cfg := range []*tls.Config{nil, {}} {
		server, client := net.Pipe()
		defer client.Close()
		_, err := rfbproxy.AcceptNative(server, cfg, time.Minute)
		if err == nil || errors.Is(err, rfbproxy.ErrClient) {
			t.Fatalf("error %v, want a configuration error", err)
		}
	}
}

// nativeDoor is the native listener in miniature, for a real viewer: the
// handshake, a token check in place of admission, the proxy's login to
// the VNC server, the SecurityResult, ClientInit onwards, then the relay.
type nativeDoor struct {
	t      *testing.T
	cfg    *tls.Config
	target string
	token  string
	prompt time.Duration

	mu    sync.Mutex
	conns []net.Conn
	// names are the server names (SNI) the viewers sent, "" for none.
	names []string
	errs  []error
}

const nativeRefusal = "unknown or expired token"

func startNativeDoor(t *testing.T, cfg *tls.Config, target, token string, prompt time.Duration) (*nativeDoor, string) {
	t.Helper()
	d := &nativeDoor{t: t, target: target, token: token, prompt: prompt}
	// Every ClientHello is seen here, also one whose handshake fails.
	d.cfg = cfg.Clone()
	d.cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		d.mu.Lock()
		d.names = append(d.names, hello.ServerName)
		d.mu.Unlock()
		return nil, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		d.mu.Lock()
		for _, c := range d.conns {
			c.Close()
		}
		d.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			d.mu.Lock()
			d.conns = append(d.conns, c)
			d.mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				if err := d.serve(c); err != nil {
					d.mu.Lock()
					d.errs = append(d.errs, err)
					d.mu.Unlock()
				}
			})
		}
	})
	return d, l.Addr().String()
}

// machineSteps bounds each stretch of the handshake that no person waits
// in: dial_timeout's part in the real listener, generous here for a
// loaded CI machine.
const machineSteps = 10 * time.Second

func (d *nativeDoor) serve(c net.Conn) error {
	// The machine steps within machineSteps, the person at the viewer's
	// prompt within d.prompt.
	_ = c.SetDeadline(time.Now().Add(machineSteps))
	nc, err := rfbproxy.AcceptNative(c, d.cfg, d.prompt)
	if err != nil {
		return err
	}
	_ = c.SetDeadline(time.Now().Add(machineSteps))
	if nc.Token != d.token {
		if err := nc.Refuse(nativeRefusal); err != nil {
			return err
		}
		return nc.TLS.Close()
	}
	raw, err := net.DialTimeout("tcp", d.target, 5*time.Second)
	if err != nil {
		return err
	}
	defer raw.Close()
	d.mu.Lock()
	d.conns = append(d.conns, raw)
	d.mu.Unlock()
	_ = raw.SetDeadline(time.Now().Add(machineSteps))
	greeting := make([]byte, rfb.VersionLen)
	if _, err := io.ReadFull(raw, greeting); err != nil {
		return err
	}
	server, _, err := rfb.Login(raw, greeting, rfb.Credentials{})
	if err != nil {
		return err
	}
	if err := nc.Admit(); err != nil {
		return err
	}
	shared, err := nc.ClientInit()
	if err != nil {
		return err
	}
	init := []byte{0}
	if shared {
		init[0] = 1
	}
	if _, err := server.Write(init); err != nil {
		return err
	}
	_ = c.SetDeadline(time.Time{})
	_ = raw.SetDeadline(time.Time{})
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(server, nc.TLS); done <- struct{}{} }()
	go func() { _, _ = io.Copy(nc.TLS, server); done <- struct{}{} }()
	<-done
	return nil
}

func (d *nativeDoor) seen() (names []string, errs []error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.names...), append([]error(nil), d.errs...)
}

// demoOnScreen finds vncdemo's picture on a screenshot: its red top-left
// corner square, then the other three corners and the background at their
// places relative to it (see vncdemo's package doc).
func demoOnScreen(img image.Image) bool {
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

// TigerVNC's vncviewer, under Xvfb, through AcceptNative to vncdemo: the
// screen shows the demo's picture; a wrong token ends the viewer with an
// authentication failure that carries the proxy's reason.
func TestNativeVNCViewer(t *testing.T) {
	testenv.Require(t, "vncviewer", "tigervnc-viewer")
	testenv.Require(t, "Xvfb", "xvfb")
	testenv.Require(t, "import", "imagemagick")

	pki := testenv.NewPKI(t)
	demo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &vncdemo.Server{}
	go func() { _ = srv.Serve(demo) }()
	t.Cleanup(func() { srv.Close() })
	door, addr := startNativeDoor(t, nativeServerTLS(t, pki), demo.Addr().String(), nativeToken, time.Minute)
	_, port, _ := net.SplitHostPort(addr)
	display := testenv.StartXvfb(t, 1024, 768)

	for _, host := range []string{"127.0.0.1", "localhost"} {
		t.Run("token, by "+host, func(t *testing.T) {
			v := testenv.VNCViewer{Display: display, CA: pki.CA, Username: "anyone", Password: nativeToken}
			p := v.Start(t, host+"::"+port)
			img, ok := testenv.WaitScreen(t, display, 30*time.Second, demoOnScreen)
			if !ok {
				path := filepath.Join(t.ArtifactDir(), "screen.png")
				testenv.SavePNG(t, path, img)
				names, errs := door.seen()
				t.Fatalf("no vncdemo picture on the screen after 30s (screenshot %s); server names %q, errors %v\n%s",
					path, names, errs, p.Output())
			}
			// Kept with go test -artifacts, to look at.
			testenv.SavePNG(t, filepath.Join(t.ArtifactDir(), "screen.png"), img)
			p.Stop()
			if out := p.Output(); strings.Contains(out, nativeToken) {
				t.Errorf("the viewer's log holds the token:\n%s", out)
			}
		})
	}

	t.Run("wrong token", func(t *testing.T) {
		v := testenv.VNCViewer{Display: display, CA: pki.CA, Username: "anyone", Password: "not-the-token"}
		p := v.Start(t, "127.0.0.1::"+port)
		select {
		case <-p.Done():
		case <-time.After(30 * time.Second):
			t.Fatalf("the viewer still runs 30s after a refusal:\n%s", p.Output())
		}
		want := "Authentication failure: " + nativeRefusal
		if out := p.Output(); !strings.Contains(out, want) {
			t.Fatalf("the viewer's log lacks %q:\n%s", want, out)
		}
		// vncviewer 1.12 exits with status 0 even so: its log is the only
		// sign of the refusal.
		t.Logf("the viewer exited: %v", p.Cmd.ProcessState)
	})

	// Without -X509CA (and a fresh HOME: no ~/.vnc/x509_ca.pem) the viewer
	// does not know the issuer and asks whether to trust it, after the TLS
	// handshake and before its credentials; nobody answers here. The proxy
	// ends the wait at the prompt timeout.
	t.Run("unknown issuer", func(t *testing.T) {
		const prompt = 2 * time.Second
		asking, askingAddr := startNativeDoor(t, nativeServerTLS(t, pki), demo.Addr().String(), nativeToken, prompt)
		_, askingPort, _ := net.SplitHostPort(askingAddr)
		v := testenv.VNCViewer{Display: display, Username: "anyone", Password: nativeToken}
		p := v.Start(t, "127.0.0.1::"+askingPort)
		deadline := time.Now().Add(prompt + 10*time.Second)
		for {
			_, errs := asking.seen()
			if len(errs) > 0 {
				if !errors.Is(errs[0], os.ErrDeadlineExceeded) || !strings.Contains(errs[0].Error(), "Plain") {
					t.Fatalf("the proxy ended with %v, want the deadline of the credentials step", errs[0])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the proxy still waits %v after the viewer connected:\n%s", prompt+10*time.Second, p.Output())
			}
			time.Sleep(100 * time.Millisecond)
		}
		if out := p.Output(); strings.Contains(out, "Authentication failure") {
			t.Errorf("the viewer failed rather than asking:\n%s", out)
		}
	})

	names, errs := door.seen()
	t.Logf("server names sent by vncviewer: %q", names)
	for _, err := range errs {
		t.Logf("door: %v", err)
	}
}
