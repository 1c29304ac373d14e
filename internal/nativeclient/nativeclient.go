// Package nativeclient is a native VNC viewer's side of the proxy's native
// listener, in Go: RFB 3.8, VeNCrypt X509Plain with the console token as
// the password, ClientInit and ServerInit. The tests use it for the exact
// protocol steps a viewer such as TigerVNC's vncviewer takes; it reuses
// the proxy's own RFB client (rfb.Login), which speaks X509Plain to
// VNC servers.
package nativeclient

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// Options are how a viewer connects.
type Options struct {
	// Token is the console token, sent as VeNCrypt Plain's password.
	Token string
	// Username is sent as the username; the proxy ignores it. Default:
	// "viewer" (Plain needs one).
	Username string
	// ServerName is the name the listener's certificate must carry, and
	// the SNI sent.
	ServerName string
	// RootCAs verify the certificate (nil: the system's).
	RootCAs *x509.CertPool
	// SNI, when set, is sent instead of ServerName (which the certificate
	// is still checked against), as viewers do that connect by an alias;
	// "-" sends none.
	SNI string
	// Exclusive sends ClientInit with the shared flag off.
	Exclusive bool
	// Timeout bounds the dial and the handshake; default 10s.
	Timeout time.Duration
}

// Conn is an open console: the TLS connection, past ServerInit.
type Conn struct {
	net.Conn
	ServerInit rfb.ServerInit
	// Security is how the viewer logged in to the proxy.
	Security rfb.Result
}

// Dial opens a console on the native listener at addr. A refusal is an
// error wrapping rfb.ErrRefused with the proxy's reason.
func Dial(addr string, o Options) (*Conn, error) {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	raw, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	c, err := Handshake(raw, o)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// Handshake runs the viewer's side on a connection to the listener.
func Handshake(raw net.Conn, o Options) (*Conn, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Username == "" {
		o.Username = "viewer"
	}
	_ = raw.SetDeadline(time.Now().Add(o.Timeout))
	greeting := make([]byte, rfb.VersionLen)
	if _, err := io.ReadFull(raw, greeting); err != nil {
		return nil, fmt.Errorf("reading the greeting: %w", err)
	}
	conn, res, err := rfb.Login(raw, greeting, rfb.Credentials{
		Username:   o.Username,
		Password:   o.Token,
		TLS:        tlsConfig(o),
		RequireTLS: true,
	})
	if err != nil {
		return nil, err
	}
	init := []byte{1}
	if o.Exclusive {
		init[0] = 0
	}
	if _, err := conn.Write(init); err != nil {
		return nil, fmt.Errorf("sending ClientInit: %w", err)
	}
	var si rfb.ServerInit
	if err := si.Read(conn); err != nil {
		return nil, err
	}
	si.Major, si.Minor, si.Security = 3, res.Minor, byte(res.Security)
	_ = raw.SetDeadline(time.Time{})
	return &Conn{Conn: conn, ServerInit: si, Security: res}, nil
}

// ProbeTLS runs the listener's handshake up to the end of TLS, with the
// certificate checked, and hangs up before any credential: it tells
// whether the listener serves its certificate yet (Caddy obtains it in
// the background) without using up or failing a token.
func ProbeTLS(addr string, o Options) error {
	raw, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	steps := []struct {
		read  int
		write []byte
	}{
		{rfb.VersionLen, rfb.AppendVersion(nil, 3, 8)},
		{2, []byte{rfb.SecurityVeNCrypt}}, // 1 type: VeNCrypt
		{2, []byte{0, 2}},                 // VeNCrypt 0.2
		{6, binary.BigEndian.AppendUint32(nil, rfb.VeNCryptX509Plain)},
		{1, nil}, // subtype accepted
	}
	for _, s := range steps {
		buf := make([]byte, s.read)
		if _, err := io.ReadFull(raw, buf); err != nil {
			return fmt.Errorf("before TLS: %w", err)
		}
		if s.write != nil {
			if _, err := raw.Write(s.write); err != nil {
				return fmt.Errorf("before TLS: %w", err)
			}
		}
	}
	return tls.Client(raw, tlsConfig(o)).Handshake()
}

// tlsConfig checks the certificate against o.ServerName and o.RootCAs,
// whatever name it sends.
func tlsConfig(o Options) *tls.Config {
	cfg := &tls.Config{ServerName: o.ServerName, RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12}
	if o.SNI == "" {
		return cfg
	}
	cfg.ServerName = o.SNI
	if o.SNI == "-" {
		cfg.ServerName = ""
	}
	// The check crypto/tls would make, against ServerName rather than
	// the name sent.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: o.ServerName, Roots: o.RootCAs, Intermediates: inter})
		return err
	}
	return cfg
}
