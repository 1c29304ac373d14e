package rfbproxy

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// The native door: the proxy as the RFB server of a native VNC viewer
// (TigerVNC's vncviewer, Remmina, gtk-vnc). Unlike a browser, which showed
// its token to the HTTP handler, a native viewer can carry its token only
// inside RFB, and only a password field can hold it. So the proxy offers
// one way in, VeNCrypt X509Plain: TLS with the listener's certificate
// first, then a username (ignored) and a password (the token). Nothing
// weaker is offered: a token sent in the clear, or over anonymous TLS
// (which Go cannot serve anyway), could be read by anyone on the path.
//
// The exchange, server (S) and client (C), before TLS:
//
//	S: "RFB 003.008\n"          C: "RFB 003.008\n" or "RFB 003.007\n"
//	S: 1, 19 (VeNCrypt)         C: 19
//	S: 0, 2 (VeNCrypt 0.2)      C: 0, 2
//	S: 0 (ok), 1, u32 262       C: u32 262 (X509Plain)
//	S: 1 (subtype accepted)
//
// then the TLS handshake with the proxy as server, and over TLS
//
//	C: u32 username length, u32 password length, username, password
//
// after which the caller decides (Admit or Refuse) and reads ClientInit.

// ErrClient: a native VNC client broke the handshake the proxy offered it
// (a bad version, a security type or subtype that was not offered, an
// oversized credential, something that is not TLS).
var ErrClient = errors.New("native VNC client broke the RFB handshake")

// maxRefusalLen bounds the reason sent with a SecurityResult failure:
// viewers show it to a person, and a reason is meant to be short.
const maxRefusalLen = 1 << 10

// NativeClient is a native viewer that completed the handshake up to its
// credentials and waits for the SecurityResult.
type NativeClient struct {
	// TLS is the connection to go on with: everything after the TLS
	// handshake (the SecurityResult, ClientInit, the session) runs over
	// it. It inherits the deadlines of the connection given to
	// AcceptNative.
	TLS *tls.Conn
	// Token is the password the viewer sent: the console token. It may be
	// empty (the lookup refuses it then). Never log it or put it in an
	// error; String leaves it out.
	Token string
	// Minor is the RFB version agreed: 3.Minor, 7 or 8.
	Minor int

	// answered is set once a SecurityResult was sent: a second one would
	// be read by the viewer as the start of the session.
	answered bool
	admitted bool
}

// String describes the client for logs, without the token.
func (c *NativeClient) String() string {
	name := ""
	if c.TLS != nil {
		name = c.TLS.ConnectionState().ServerName
	}
	return fmt.Sprintf("native RFB 3.%d client, server name %q", c.Minor, name)
}

// AcceptNative runs the server side of a native viewer's handshake on conn
// up to and including its VeNCrypt Plain credentials (see the exchange
// above), with tlsConfig for the TLS handshake (the certificate it serves
// is the caller's choice, whatever name the client asks for). The viewer
// then waits for the SecurityResult: the caller runs admission with
// NativeClient.Token and calls Admit or Refuse.
//
// Deadlines: the caller bounds the exchange up to the end of the TLS
// handshake with conn's deadline (the TLS connection inherits it); a
// machine answers each of those steps at once. The credentials are
// different: between the TLS handshake and sending them a viewer may wait
// for a person, who types the token into its password prompt or answers a
// question about the certificate (TigerVNC asks when the name does not
// match or the issuer is unknown). So when promptTimeout is positive,
// AcceptNative moves conn's deadline to promptTimeout from the end of the
// handshake for that step; zero keeps the caller's deadline. Either way,
// the caller sets its own deadline again after AcceptNative returns. Every
// read here is of a bounded size, so a client that stalls, sends garbage
// or huge lengths, or never finishes the TLS handshake, ends within these
// deadlines.
//
// Errors wrap ErrClient when the client broke the protocol, or the I/O
// error (io.EOF, os.ErrDeadlineExceeded, ...), with the step that failed;
// they never contain a credential. On an error the caller closes conn.
func AcceptNative(conn net.Conn, tlsConfig *tls.Config, promptTimeout time.Duration) (*NativeClient, error) {
	if tlsConfig == nil || (len(tlsConfig.Certificates) == 0 && tlsConfig.GetCertificate == nil && tlsConfig.GetConfigForClient == nil) {
		// A server without a certificate would fail every handshake and
		// blame the clients; say whose fault it is before any byte is sent.
		return nil, errors.New("native VNC listener: no TLS certificate configured")
	}

	if _, err := conn.Write(rfb.AppendVersion(nil, 3, 8)); err != nil {
		return nil, fmt.Errorf("sending version: %w", err)
	}
	var v [rfb.VersionLen]byte
	if _, err := io.ReadFull(conn, v[:]); err != nil {
		return nil, fmt.Errorf("reading version: %w", err)
	}
	major, minor, err := rfb.ParseVersion(v[:])
	if err != nil || major != 3 {
		return nil, fmt.Errorf("%w: version %q is not RFB 3.x", ErrClient, rfb.Printable(v[:]))
	}
	minor = rfb.UsedMinor(minor)
	if minor == 3 {
		// In RFB 3.3 the server names the one security type and the client
		// cannot decline it; 3.3 viewers (old Java applets) know no
		// VeNCrypt. Say so in the viewer's own terms: security type 0 is a
		// failure with a reason.
		const reason = "this proxy needs an RFB 3.7 or 3.8 viewer with VeNCrypt X509Plain"
		b := binary.BigEndian.AppendUint32(nil, rfb.SecurityInvalid)
		b = binary.BigEndian.AppendUint32(b, uint32(len(reason)))
		_, _ = conn.Write(append(b, reason...))
		return nil, fmt.Errorf("%w: version %q is RFB 3.3, which cannot choose VeNCrypt", ErrClient, rfb.Printable(v[:]))
	}

	if _, err := conn.Write([]byte{1, rfb.SecurityVeNCrypt}); err != nil {
		return nil, fmt.Errorf("sending security types: %w", err)
	}
	var choice [1]byte
	if _, err := io.ReadFull(conn, choice[:]); err != nil {
		return nil, fmt.Errorf("reading security type: %w", err)
	}
	if choice[0] != rfb.SecurityVeNCrypt {
		// RFC 6143 7.1.2: the server may answer with a failed
		// SecurityResult (with a reason in 3.8).
		_, _ = conn.Write(failedSecurityResult(minor, "only VeNCrypt X509Plain is offered"))
		return nil, fmt.Errorf("%w: chose security type %d, which was not offered", ErrClient, choice[0])
	}

	// VeNCrypt 0.2: the server names the highest version it speaks, the
	// client answers with the one it will speak (0.0: none), the server
	// acknowledges with 0 (ok) or anything else (not ok).
	if _, err := conn.Write([]byte{0, 2}); err != nil {
		return nil, fmt.Errorf("sending VeNCrypt version: %w", err)
	}
	var cv [2]byte
	if _, err := io.ReadFull(conn, cv[:]); err != nil {
		return nil, fmt.Errorf("reading VeNCrypt version: %w", err)
	}
	if cv != [2]byte{0, 2} {
		_, _ = conn.Write([]byte{0xff})
		return nil, fmt.Errorf("%w: VeNCrypt version %d.%d, want 0.2", ErrClient, cv[0], cv[1])
	}
	// The acknowledgement and the subtype list go out together: the client
	// reads them in a row.
	b := []byte{0, 1}
	b = binary.BigEndian.AppendUint32(b, rfb.VeNCryptX509Plain)
	if _, err := conn.Write(b); err != nil {
		return nil, fmt.Errorf("sending VeNCrypt subtypes: %w", err)
	}
	var sub [4]byte
	if _, err := io.ReadFull(conn, sub[:]); err != nil {
		return nil, fmt.Errorf("reading VeNCrypt subtype: %w", err)
	}
	if s := binary.BigEndian.Uint32(sub[:]); s != rfb.VeNCryptX509Plain {
		// 0: the subtype is not accepted; viewers read this byte before
		// they start TLS.
		_, _ = conn.Write([]byte{0})
		return nil, fmt.Errorf("%w: chose VeNCrypt subtype %s, which was not offered", ErrClient, rfb.SecurityName(s))
	}
	if _, err := conn.Write([]byte{1}); err != nil {
		return nil, fmt.Errorf("accepting VeNCrypt subtype: %w", err)
	}

	tc := tls.Server(conn, tlsConfig)
	if err := tc.Handshake(); err != nil {
		if connectionEnded(err) {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		return nil, fmt.Errorf("%w: TLS handshake: %w", ErrClient, err)
	}
	if promptTimeout > 0 {
		if err := conn.SetDeadline(time.Now().Add(promptTimeout)); err != nil {
			return nil, fmt.Errorf("setting the deadline for the credentials: %w", err)
		}
	}
	token, err := readPlainCredentials(tc)
	if err != nil {
		return nil, err
	}
	return &NativeClient{TLS: tc, Token: token, Minor: minor}, nil
}

// readPlainCredentials reads VeNCrypt Plain's credentials and returns the
// password; the username is read and dropped. Lengths past
// rfb.MaxCredentialLen, the bound the proxy's own logins keep, are refused
// before anything is allocated or read.
func readPlainCredentials(r io.Reader) (password string, err error) {
	var lens [8]byte
	if _, err := io.ReadFull(r, lens[:]); err != nil {
		return "", fmt.Errorf("reading VeNCrypt Plain lengths: %w", err)
	}
	ulen := binary.BigEndian.Uint32(lens[0:])
	plen := binary.BigEndian.Uint32(lens[4:])
	if ulen > rfb.MaxCredentialLen || plen > rfb.MaxCredentialLen {
		return "", fmt.Errorf("%w: VeNCrypt Plain username of %d bytes or password of %d bytes, more than %d",
			ErrClient, ulen, plen, rfb.MaxCredentialLen)
	}
	buf := make([]byte, ulen+plen)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", fmt.Errorf("reading VeNCrypt Plain credentials: %w", err)
	}
	return string(buf[ulen:]), nil
}

// Admit sends SecurityResult OK: the viewer sends ClientInit next.
func (c *NativeClient) Admit() error {
	if c.answered {
		return errors.New("security result already sent")
	}
	c.answered = true
	if _, err := c.TLS.Write([]byte{0, 0, 0, 0}); err != nil {
		return fmt.Errorf("sending security result: %w", err)
	}
	c.admitted = true
	return nil
}

// Refuse sends SecurityResult failed with reason (cut to 1 KiB), which an
// RFB 3.8 viewer shows its user; RFB 3.7 has no field for it (RFC 6143
// 7.1.3). The caller closes c.TLS afterwards: the viewer reads the result
// and sees the connection end.
func (c *NativeClient) Refuse(reason string) error {
	if c.answered {
		return errors.New("security result already sent")
	}
	c.answered = true
	if len(reason) > maxRefusalLen {
		reason = strings.ToValidUTF8(reason[:maxRefusalLen], "")
	}
	if _, err := c.TLS.Write(failedSecurityResult(c.Minor, reason)); err != nil {
		return fmt.Errorf("sending security result: %w", err)
	}
	return nil
}

// ClientInit reads the viewer's ClientInit after Admit and returns its
// shared flag. It is the caller's to forward to the VNC server (forced
// shared for a view-only console), as RFB-aware mode does for browsers:
// the proxy logged in to the VNC server before Admit, and the server waits
// for ClientInit, whose answer (ServerInit) the relay then carries back.
// It is a method of its own, not part of Admit, so that the session that
// relays can read it under its own handshake timer.
func (c *NativeClient) ClientInit() (shared bool, err error) {
	if !c.admitted {
		return false, errors.New("ClientInit before the client was admitted")
	}
	var init [1]byte
	if _, err := io.ReadFull(c.TLS, init[:]); err != nil {
		return false, fmt.Errorf("reading ClientInit: %w", err)
	}
	return init[0] != 0, nil
}

// failedSecurityResult is a failed SecurityResult: U32 1, and in RFB 3.8 the
// reason as a U32 length and its bytes.
func failedSecurityResult(minor int, reason string) []byte {
	b := binary.BigEndian.AppendUint32(nil, 1)
	if minor < 8 {
		return b
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(reason)))
	return append(b, reason...)
}

// connectionEnded tells a connection that ended or timed out from a peer that
// sent something wrong.
func connectionEnded(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
