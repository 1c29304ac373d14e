package caddymodule

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// VNCAuth is how the proxy logs in to VNC servers itself, so that the
// browser never sees a VNC credential (the RFB-aware mode).
type VNCAuth struct {
	// The VNC server's password: for VNC authentication (security type 2),
	// alone or inside VeNCrypt (X509Vnc), and for VeNCrypt's Plain
	// subtypes. Placeholders such as {env.VNC_PASSWORD} work. A token's
	// "password" takes its place for that console. Default: none.
	Password string `json:"password,omitempty"`

	// The username for VeNCrypt's Plain subtypes (X509Plain, Plain). A
	// token's "username" takes its place. Default: none.
	Username string `json:"username,omitempty"`

	// TLS enables VeNCrypt (security type 19) with X.509 certificates:
	// X509None, X509Vnc and X509Plain. Default: off.
	TLS *VNCTLS `json:"tls,omitempty"`

	// Refuse a VNC server that offers no VeNCrypt X.509 subtype. Needs
	// tls. Default: false.
	RequireTLS bool `json:"require_tls,omitempty"`
}

// VNCTLS is the TLS client configuration for VeNCrypt's X.509 subtypes.
type VNCTLS struct {
	// PEM file with the CA certificates that sign the VNC servers'
	// certificates. Required.
	CA string `json:"ca,omitempty"`
	// PEM files with a client certificate and its key, for VNC servers that
	// verify their clients (QEMU's verify-peer=on). Default: none.
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
	// The name the server's certificate must carry. Default: the chain is
	// checked against ca only, because a hypervisor's certificate rarely
	// names the address a console token points at.
	ServerName string `json:"server_name,omitempty"`
}

// credentials are what the proxy logs in to VNC servers with; none
// without vnc_auth.
func (a *VNCAuth) credentials() (rfb.Credentials, error) {
	if a == nil {
		return rfb.Credentials{}, nil
	}
	repl := caddy.NewReplacer()
	c := rfb.Credentials{
		Password:   repl.ReplaceKnown(a.Password, ""),
		Username:   repl.ReplaceKnown(a.Username, ""),
		RequireTLS: a.RequireTLS,
	}
	if a.RequireTLS && a.TLS == nil {
		return c, errors.New("vnc_auth: require_tls needs a tls block with the VNC servers' ca")
	}
	if a.TLS != nil {
		cfg, err := a.TLS.clientConfig()
		if err != nil {
			return c, fmt.Errorf("vnc_auth: tls: %w", err)
		}
		c.TLS = cfg
	}
	return c, nil
}

// clientConfig builds the TLS configuration VeNCrypt's X.509 subtypes use.
func (t *VNCTLS) clientConfig() (*tls.Config, error) {
	if t.CA == "" {
		return nil, errors.New("ca is required: the CA that signs the VNC servers' certificates")
	}
	pem, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, fmt.Errorf("reading ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca %s holds no PEM certificate", t.CA)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    roots,
		ServerName: t.ServerName,
	}
	if (t.Cert == "") != (t.Key == "") {
		return nil, errors.New("cert and key go together")
	}
	if t.Cert != "" {
		pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if t.ServerName == "" {
		// Verify the chain against the CA, without a name to match.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the VNC server sent no certificate")
			}
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	}
	return cfg, nil
}
