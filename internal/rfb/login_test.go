package rfb_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

const password = "s3cr3t-pw"

// tlsConfig is what the handler builds from vnc_auth { tls { ... } }: the
// PKI's CA, its client certificate, and a server name when given.
func tlsConfig(t *testing.T, p *testenv.PKI, withClientCert bool, serverName string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(p.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}
	if serverName == "" {
		cfg.ServerName = "localhost"
	}
	if withClientCert {
		pair, err := tls.LoadX509KeyPair(p.ClientCert, p.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

// login dials addr, reads the greeting and logs in.
func login(t *testing.T, addr string, cred rfb.Credentials) (net.Conn, rfb.Result, error) {
	t.Helper()
	c := testenv.Dial(t, addr, 20*time.Second)
	greeting := make([]byte, rfb.VersionLen)
	if _, err := io.ReadFull(c, greeting); err != nil {
		t.Fatalf("reading greeting: %v", err)
	}
	return rfb.Login(c, greeting, cred)
}

// serverInit sends ClientInit (shared) on a logged-in connection and reads
// ServerInit's framebuffer size.
func serverInit(t *testing.T, c net.Conn) (width, height int) {
	t.Helper()
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatalf("sending ClientInit: %v", err)
	}
	var b [24]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("reading ServerInit: %v", err)
	}
	return int(binary.BigEndian.Uint16(b[0:])), int(binary.BigEndian.Uint16(b[2:]))
}

func TestLoginQEMU(t *testing.T) {
	pki := testenv.NewPKI(t)
	cases := []struct {
		name         string
		qemu         testenv.QEMU
		cred         func() rfb.Credentials
		wantSecurity string
	}{
		{"VNC password", testenv.QEMU{Password: password},
			func() rfb.Credentials { return rfb.Credentials{Password: password} }, "vnc"},
		{"VeNCrypt X509None with a client certificate", testenv.QEMU{TLS: pki},
			func() rfb.Credentials {
				return rfb.Credentials{TLS: tlsConfig(t, pki, true, ""), RequireTLS: true}
			}, "vencrypt x509none"},
		{"VeNCrypt X509Vnc with a client certificate", testenv.QEMU{TLS: pki, Password: password},
			func() rfb.Credentials {
				return rfb.Credentials{TLS: tlsConfig(t, pki, true, "localhost"), Password: password, RequireTLS: true}
			}, "vencrypt x509vnc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr := testenv.StartQEMU(t, c.qemu)
			conn, res, err := login(t, addr, c.cred())
			if err != nil {
				t.Fatalf("Login: %v", err)
			}
			if res.String() != c.wantSecurity || res.Minor != 8 {
				t.Errorf("logged in with %q over 3.%d, want %q over 3.8", res, res.Minor, c.wantSecurity)
			}
			if w, h := serverInit(t, conn); w == 0 || h == 0 {
				t.Errorf("ServerInit size %dx%d", w, h)
			}
		})
	}
}

func TestLoginQEMURefused(t *testing.T) {
	pki := testenv.NewPKI(t)
	other := testenv.NewPKI(t)
	plainAddr := testenv.StartQEMU(t, testenv.QEMU{Password: password})
	tlsAddr := testenv.StartQEMU(t, testenv.QEMU{TLS: pki, Password: password})
	cases := []struct {
		name string
		addr string
		cred rfb.Credentials
		want error
		text string
	}{
		{"wrong password", plainAddr, rfb.Credentials{Password: "wrong-pw"}, rfb.ErrRefused, "refused"},
		{"no password", plainAddr, rfb.Credentials{}, rfb.ErrNoSecurityType, "asks for a VNC password"},
		{"require_tls without TLS at the server", plainAddr,
			rfb.Credentials{Password: password, TLS: tlsConfig(t, pki, true, ""), RequireTLS: true},
			rfb.ErrNoSecurityType, "require_tls"},
		{"wrong CA", tlsAddr, rfb.Credentials{Password: password, TLS: tlsConfig(t, other, true, "")},
			rfb.ErrRefused, "certificate signed by unknown authority"},
		{"server name mismatch", tlsAddr, rfb.Credentials{Password: password, TLS: tlsConfig(t, pki, true, "compute-9.example")},
			rfb.ErrRefused, "compute-9.example"},
		{"no client certificate", tlsAddr, rfb.Credentials{Password: password, TLS: tlsConfig(t, pki, false, "")},
			nil, ""},
		{"wrong password inside TLS", tlsAddr, rfb.Credentials{Password: "wrong-pw", TLS: tlsConfig(t, pki, true, "")},
			rfb.ErrRefused, "x509vnc"},
		{"TLS at the server, none configured", tlsAddr, rfb.Credentials{Password: password},
			rfb.ErrNoSecurityType, "VeNCrypt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, _, err := login(t, c.addr, c.cred)
			if err == nil && c.want == nil {
				// With TLS 1.3 the server's refusal of a missing client
				// certificate arrives after the client's handshake is
				// done: it shows on the first read.
				_, err = conn.Read(make([]byte, 1))
			}
			if err == nil {
				t.Fatal("logged in, want an error")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("error %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.text) {
				t.Errorf("error %q does not say %q", err, c.text)
			}
			if strings.Contains(err.Error(), password) || strings.Contains(err.Error(), "wrong-pw") {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

func TestLoginXvnc(t *testing.T) {
	pki := testenv.NewPKI(t)
	pwfile := testenv.VNCPasswordFile(t, password)
	addr := testenv.StartXvnc(t, "-SecurityTypes", "X509None,X509Vnc,VncAuth",
		"-X509Cert", pki.ServerCert, "-X509Key", pki.ServerKey, "-PasswordFile", pwfile)
	cases := []struct {
		name string
		cred rfb.Credentials
		want string
	}{
		{"TLS and a password: X509Vnc", rfb.Credentials{TLS: tlsConfig(t, pki, false, ""), Password: password}, "vencrypt x509vnc"},
		{"TLS alone: X509None", rfb.Credentials{TLS: tlsConfig(t, pki, false, "")}, "vencrypt x509none"},
		{"a password alone: VNC authentication", rfb.Credentials{Password: password}, "vnc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, res, err := login(t, addr, c.cred)
			if err != nil {
				t.Fatalf("Login: %v", err)
			}
			if res.String() != c.want {
				t.Errorf("logged in with %q, want %q", res, c.want)
			}
			if w, h := serverInit(t, conn); w != 800 || h != 600 {
				t.Errorf("ServerInit size %dx%d, want 800x600", w, h)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		_, _, err := login(t, addr, rfb.Credentials{Password: "wrong-pw"})
		if !errors.Is(err, rfb.ErrRefused) {
			t.Fatalf("error %v, want ErrRefused", err)
		}
		if strings.Contains(err.Error(), "wrong-pw") {
			t.Errorf("error %q contains the password", err)
		}
	})
}

// scripted serves one connection: it writes the server's bytes, with the
// client's replies read and discarded in between as reply says, and
// returns the address.
func scripted(t *testing.T, steps ...func(c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		for _, step := range steps {
			step(c)
		}
		// Hold the connection until the client closes it.
		_, _ = io.Copy(io.Discard, c)
	}()
	return l.Addr().String()
}

func send(b ...[]byte) func(net.Conn) {
	return func(c net.Conn) { _, _ = c.Write(bytes.Join(b, nil)) }
}

func read(n int) func(net.Conn) {
	return func(c net.Conn) { _, _ = io.ReadFull(c, make([]byte, n)) }
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func TestLoginHostileServers(t *testing.T) {
	v38 := []byte("RFB 003.008\n")
	anyTLS := &tls.Config{InsecureSkipVerify: true} // never reached
	cases := []struct {
		name  string
		steps []func(net.Conn)
		cred  rfb.Credentials
		want  error
		text  string
	}{
		{"garbage greeting", []func(net.Conn){send([]byte("HTTP/1.1 200\n"))}, rfb.Credentials{}, rfb.ErrProtocol, "not RFB 3.x"},
		{"RFB 4.0", []func(net.Conn){send([]byte("RFB 004.000\n"))}, rfb.Credentials{}, rfb.ErrProtocol, "not RFB 3.x"},
		{"zero security types with a reason", []func(net.Conn){send(v38), read(12), send([]byte{0}, u32(9), []byte("too many\n"))},
			rfb.Credentials{}, rfb.ErrRefused, `"too many."`},
		{"a reason of 4 GiB", []func(net.Conn){send(v38), read(12), send([]byte{0}, u32(0xffffffff))},
			rfb.Credentials{}, rfb.ErrRefused, "4294967295 bytes, not read"},
		{"login refused with a 4 GiB reason", []func(net.Conn){send(v38), read(12), send([]byte{1, 2}), read(1), send(make([]byte, 16)), read(16), send(u32(1), u32(0xfffffff0))},
			rfb.Credentials{Password: password}, rfb.ErrRefused, "not read"},
		{"only anonymous TLS", []func(net.Conn){send(v38), read(12), send([]byte{1, 19}), read(1), send([]byte{0, 2}), read(2), send([]byte{0, 2}, u32(257), u32(258))},
			rfb.Credentials{TLS: anyTLS, Password: password}, rfb.ErrNoSecurityType, "anonymous TLS"},
		{"VeNCrypt with zero subtypes", []func(net.Conn){send(v38), read(12), send([]byte{1, 19}), read(1), send([]byte{0, 2}), read(2), send([]byte{0, 0})},
			rfb.Credentials{TLS: anyTLS}, rfb.ErrProtocol, "subtype count of zero"},
		{"VeNCrypt version refused", []func(net.Conn){send(v38), read(12), send([]byte{1, 19}), read(1), send([]byte{0, 2}), read(2), send([]byte{1})},
			rfb.Credentials{TLS: anyTLS}, rfb.ErrRefused, "VeNCrypt 0.2"},
		{"unknown security types only", []func(net.Conn){send(v38), read(12), send([]byte{2, 16, 30})},
			rfb.Credentials{Password: password}, rfb.ErrNoSecurityType, "type 16"},
		{"RFB 3.3 server wanting an unknown type", []func(net.Conn){send([]byte("RFB 003.003\n")), read(12), send(u32(5))},
			rfb.Credentials{}, rfb.ErrNoSecurityType, "type 5"},
		{"closes mid-handshake", []func(net.Conn){send(v38), read(12), send([]byte{3, 1})},
			rfb.Credentials{}, io.ErrUnexpectedEOF, "security types"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr := scripted(t, append(c.steps, func(c net.Conn) { c.Close() })...)
			start := time.Now()
			_, _, err := login(t, addr, c.cred)
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.text) {
				t.Errorf("error %q does not say %q", err, c.text)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error %q contains the password", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestLoginOlderServers(t *testing.T) {
	challenge := make([]byte, 16)
	cases := []struct {
		name  string
		steps []func(net.Conn)
		cred  rfb.Credentials
		want  string
	}{
		{"3.3 with None", []func(net.Conn){send([]byte("RFB 003.003\n")), read(12), send(u32(1))}, rfb.Credentials{}, "none"},
		{"3.3 with VNC authentication", []func(net.Conn){send([]byte("RFB 003.003\n")), read(12), send(u32(2), challenge), read(16), send(u32(0))},
			rfb.Credentials{Password: password}, "vnc"},
		{"3.7 with None: no SecurityResult", []func(net.Conn){send([]byte("RFB 003.007\n")), read(12), send([]byte{1, 1}), read(1)}, rfb.Credentials{}, "none"},
		{"3.8 with None", []func(net.Conn){send([]byte("RFB 003.008\n")), read(12), send([]byte{1, 1}), read(1), send(u32(0))}, rfb.Credentials{}, "none"},
		{"3.889 is answered as 3.8", []func(net.Conn){send([]byte("RFB 003.889\n")), read(12), send([]byte{2, 2, 1}), read(1), send(u32(0))}, rfb.Credentials{}, "none"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr := scripted(t, c.steps...)
			_, res, err := login(t, addr, c.cred)
			if err != nil {
				t.Fatalf("Login: %v", err)
			}
			if res.String() != c.want {
				t.Errorf("security %q, want %q", res, c.want)
			}
		})
	}
}
