// Package rfbproxy is the RFB-aware part of a console: it logs in to the
// VNC server on the browser's behalf (security None, VNC authentication,
// VeNCrypt with X.509 certificates or Plain), offers the browser RFB 3.8
// with security None in its place, and frames the browser's messages for
// view-only consoles, dropping input.
//
// It knows nothing of Caddy or WebSockets: it works on byte streams, and the
// caller sets their deadlines.
package rfbproxy

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// maxReasonLen bounds the failure reason a VNC server may send; a longer
// one is not read, so a hostile server cannot make the proxy read or
// allocate much.
const maxReasonLen = 4 << 10

// maxCredentialLen bounds a VeNCrypt Plain username or password.
const maxCredentialLen = 1 << 10

// Errors of Login; test them with errors.Is.
var (
	// ErrRefused: the VNC server refused the connection or the login (a
	// wrong password, a client certificate it does not accept).
	ErrRefused = errors.New("vnc server refused the login")
	// ErrNoSecurityType: nothing the server offers can be served with the
	// credentials at hand, or with RequireTLS, nothing over X.509 TLS.
	ErrNoSecurityType = errors.New("no usable security type")
	// ErrProtocol: the server broke the protocol (a bad greeting, a zero
	// type count, an oversized reason).
	ErrProtocol = errors.New("vnc server broke the RFB protocol")
)

// Credentials are what the proxy holds to log in to a VNC server.
type Credentials struct {
	// Password for VNC authentication, alone or inside VeNCrypt (X509Vnc),
	// and for VeNCrypt's Plain subtypes.
	Password string
	// Username for VeNCrypt's Plain subtypes.
	Username string
	// TLS, when set, enables VeNCrypt's X.509 subtypes. It must verify the
	// server's certificate (RootCAs, and ServerName or a VerifyConnection).
	TLS *tls.Config
	// RequireTLS refuses a server that offers no VeNCrypt X.509 subtype.
	RequireTLS bool
}

// Result says how a login went.
type Result struct {
	// Minor is the RFB version agreed with the server: 3.Minor.
	Minor int
	// Security is the security type used; Subtype the VeNCrypt subtype, or 0.
	Security uint32
	Subtype  uint32
}

// String names the security, for logs: "vnc", "vencrypt x509vnc", ...
func (r Result) String() string {
	name := securityName(r.Security)
	if r.Subtype != 0 {
		name += " " + securityName(r.Subtype)
	}
	return name
}

func securityName(t uint32) string {
	switch t {
	case rfb.SecurityNone:
		return "none"
	case rfb.SecurityVNCAuth:
		return "vnc"
	case rfb.SecurityVeNCrypt:
		return "vencrypt"
	case rfb.VeNCryptPlain:
		return "plain"
	case rfb.VeNCryptTLSNone:
		return "tlsnone"
	case rfb.VeNCryptTLSVnc:
		return "tlsvnc"
	case rfb.VeNCryptTLSPlain:
		return "tlsplain"
	case rfb.VeNCryptX509None:
		return "x509none"
	case rfb.VeNCryptX509Vnc:
		return "x509vnc"
	case rfb.VeNCryptX509Plain:
		return "x509plain"
	}
	return fmt.Sprintf("type %d", t)
}

// Login runs the client side of the RFB handshake with a VNC server whose
// greeting ("RFB xxx.yyy\n") the caller has read already, up to and
// including the SecurityResult: the server then waits for ClientInit. It
// returns the connection to go on with, which is a TLS connection over conn
// when a VeNCrypt X.509 subtype was used.
//
// Errors wrap ErrRefused, ErrNoSecurityType or ErrProtocol, or an I/O error,
// with the step that failed and the server's own reason; they never contain
// a credential. The caller bounds the whole exchange with conn's deadline;
// a TLS connection inherits it.
func Login(conn net.Conn, greeting []byte, cred Credentials) (net.Conn, Result, error) {
	l := login{conn: conn, cred: cred}
	err := l.run(greeting)
	return l.conn, l.res, err
}

type login struct {
	conn net.Conn
	cred Credentials
	res  Result
}

func (l *login) run(greeting []byte) error {
	major, minor, err := rfb.ParseVersion(greeting)
	if err != nil || major != 3 {
		return fmt.Errorf("%w: greeting %q is not RFB 3.x", ErrProtocol, printable(greeting))
	}
	minor = rfb.UsedMinor(minor)
	l.res.Minor = minor
	if err := l.write(rfb.AppendVersion(nil, 3, minor)); err != nil {
		return fmt.Errorf("sending version: %w", err)
	}

	var sec uint32
	if minor == 3 {
		// The server decides.
		if sec, err = l.readU32(); err != nil {
			return fmt.Errorf("reading security type: %w", err)
		}
		if sec == 0 {
			return fmt.Errorf("%w: connection refused: %s", ErrRefused, l.reason())
		}
		if !l.usable(sec) {
			return fmt.Errorf("%w: the server wants security %s", ErrNoSecurityType, securityName(sec))
		}
	} else {
		n, err := l.readU8()
		if err != nil {
			return fmt.Errorf("reading security types: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("%w: connection refused: %s", ErrRefused, l.reason())
		}
		offered := make([]byte, n)
		if _, err := io.ReadFull(l.conn, offered); err != nil {
			return fmt.Errorf("reading security types: %w", err)
		}
		if sec, err = l.choose(offered); err != nil {
			return err
		}
		if err := l.write([]byte{byte(sec)}); err != nil {
			return fmt.Errorf("choosing security type: %w", err)
		}
	}
	l.res.Security = sec

	switch sec {
	case rfb.SecurityVNCAuth:
		if err := l.vncAuth(); err != nil {
			return err
		}
	case rfb.SecurityVeNCrypt:
		if err := l.veNCrypt(); err != nil {
			return err
		}
	}

	// RFB 3.3 and 3.7 skip the SecurityResult after security None.
	if sec == rfb.SecurityNone && minor < 8 {
		return nil
	}
	result, err := l.readU32()
	if err != nil {
		return fmt.Errorf("reading security result: %w", err)
	}
	if result != 0 {
		if minor == 8 {
			return fmt.Errorf("%w: %s: %s", ErrRefused, l.res, l.reason())
		}
		return fmt.Errorf("%w: %s", ErrRefused, l.res)
	}
	return nil
}

// usable reports whether the top-level type sec can be served, for an RFB
// 3.3 server, which names one type only.
func (l *login) usable(sec uint32) bool {
	switch sec {
	case rfb.SecurityVeNCrypt:
		return true // the subtypes decide
	case rfb.SecurityVNCAuth:
		return l.cred.Password != "" && !l.cred.RequireTLS
	case rfb.SecurityNone:
		return !l.cred.RequireTLS
	}
	return false
}

// choose picks a top-level security type among those offered: VeNCrypt
// when TLS is configured (or when it is the only way to use a username and
// password), then VNC authentication when a password is known, then None.
func (l *login) choose(offered []byte) (uint32, error) {
	has := func(t byte) bool { return slices.Contains(offered, t) }
	c := l.cred
	switch {
	case has(rfb.SecurityVeNCrypt) && c.TLS != nil:
		return rfb.SecurityVeNCrypt, nil
	case c.RequireTLS:
		return 0, fmt.Errorf("%w: require_tls is set and the server offers no VeNCrypt (offers %s)", ErrNoSecurityType, typeList(offered))
	case has(rfb.SecurityVNCAuth) && c.Password != "":
		return rfb.SecurityVNCAuth, nil
	case has(rfb.SecurityVeNCrypt) && c.Password != "" && c.Username != "":
		return rfb.SecurityVeNCrypt, nil
	case has(rfb.SecurityNone):
		return rfb.SecurityNone, nil
	case has(rfb.SecurityVNCAuth):
		return 0, fmt.Errorf("%w: the server asks for a VNC password and none is configured", ErrNoSecurityType)
	case has(rfb.SecurityVeNCrypt):
		return 0, fmt.Errorf("%w: the server offers only VeNCrypt and no tls (or username and password) is configured", ErrNoSecurityType)
	}
	return 0, fmt.Errorf("%w: the server offers %s", ErrNoSecurityType, typeList(offered))
}

func typeList(types []byte) string {
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = securityName(uint32(t))
	}
	return "[" + strings.Join(names, " ") + "]"
}

func (l *login) vncAuth() error {
	if l.cred.Password == "" {
		return fmt.Errorf("%w: the server asks for a VNC password and none is configured", ErrNoSecurityType)
	}
	var challenge [16]byte
	if _, err := io.ReadFull(l.conn, challenge[:]); err != nil {
		return fmt.Errorf("reading VNC authentication challenge: %w", err)
	}
	resp := rfb.VNCAuthResponse(l.cred.Password, challenge)
	if err := l.write(resp[:]); err != nil {
		return fmt.Errorf("sending VNC authentication response: %w", err)
	}
	return nil
}

// veNCrypt runs VeNCrypt 0.2: version, subtype, and for X.509 subtypes the
// TLS handshake, then the subtype's own authentication.
func (l *login) veNCrypt() error {
	var v [2]byte
	if _, err := io.ReadFull(l.conn, v[:]); err != nil {
		return fmt.Errorf("reading VeNCrypt version: %w", err)
	}
	if v[0] != 0 || v[1] < 2 {
		return fmt.Errorf("%w: VeNCrypt version %d.%d, want 0.2", ErrNoSecurityType, v[0], v[1])
	}
	if err := l.write([]byte{0, 2}); err != nil {
		return fmt.Errorf("sending VeNCrypt version: %w", err)
	}
	status, err := l.readU8()
	if err != nil {
		return fmt.Errorf("reading VeNCrypt version status: %w", err)
	}
	if status != 0 {
		return fmt.Errorf("%w: the server refused VeNCrypt 0.2", ErrRefused)
	}
	n, err := l.readU8()
	if err != nil {
		return fmt.Errorf("reading VeNCrypt subtypes: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("%w: VeNCrypt subtype count of zero", ErrProtocol)
	}
	buf := make([]byte, 4*int(n))
	if _, err := io.ReadFull(l.conn, buf); err != nil {
		return fmt.Errorf("reading VeNCrypt subtypes: %w", err)
	}
	offered := make([]uint32, n)
	for i := range offered {
		offered[i] = binary.BigEndian.Uint32(buf[4*i:])
	}
	sub, err := l.chooseSubtype(offered)
	if err != nil {
		return err
	}
	l.res.Subtype = sub
	if err := l.write(binary.BigEndian.AppendUint32(nil, sub)); err != nil {
		return fmt.Errorf("choosing VeNCrypt subtype: %w", err)
	}
	ack, err := l.readU8()
	if err != nil {
		return fmt.Errorf("reading VeNCrypt subtype acknowledgement: %w", err)
	}
	if ack != 1 {
		return fmt.Errorf("%w: the server refused VeNCrypt %s", ErrRefused, securityName(sub))
	}

	switch sub {
	case rfb.VeNCryptX509None, rfb.VeNCryptX509Vnc, rfb.VeNCryptX509Plain:
		tc := tls.Client(l.conn, l.cred.TLS)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("%w: TLS handshake: %v", ErrRefused, err)
		}
		l.conn = tc
	}
	switch sub {
	case rfb.SecurityVNCAuth, rfb.VeNCryptX509Vnc:
		return l.vncAuth()
	case rfb.VeNCryptPlain, rfb.VeNCryptX509Plain:
		return l.plain()
	}
	return nil
}

// chooseSubtype prefers X.509 subtypes that use the credentials at hand:
// X509Plain, then X509Vnc, then X509None; without TLS (and without
// RequireTLS) VNC authentication, then Plain, then None.
func (l *login) chooseSubtype(offered []uint32) (uint32, error) {
	c := l.cred
	var prefs []uint32
	if c.TLS != nil {
		if c.Username != "" && c.Password != "" {
			prefs = append(prefs, rfb.VeNCryptX509Plain)
		}
		if c.Password != "" {
			prefs = append(prefs, rfb.VeNCryptX509Vnc)
		}
		prefs = append(prefs, rfb.VeNCryptX509None)
	}
	if !c.RequireTLS {
		if c.Password != "" {
			prefs = append(prefs, rfb.SecurityVNCAuth)
		}
		if c.Username != "" && c.Password != "" {
			prefs = append(prefs, rfb.VeNCryptPlain)
		}
		prefs = append(prefs, rfb.SecurityNone)
	}
	for _, p := range prefs {
		if slices.Contains(offered, p) {
			return p, nil
		}
	}
	names := make([]string, len(offered))
	anonymous := false
	for i, t := range offered {
		names[i] = securityName(t)
		anonymous = anonymous || t == rfb.VeNCryptTLSNone || t == rfb.VeNCryptTLSVnc || t == rfb.VeNCryptTLSPlain
	}
	detail := "VeNCrypt offers [" + strings.Join(names, " ") + "]"
	if anonymous {
		detail += "; anonymous TLS (tlsnone, tlsvnc, tlsplain) is not served: it authenticates no server, so anyone on the path could read the console"
	}
	if c.TLS == nil {
		detail += "; the X.509 subtypes need vnc_auth { tls { ca ... } }"
	}
	return 0, fmt.Errorf("%w: %s", ErrNoSecurityType, detail)
}

// plain sends VeNCrypt Plain's username and password.
func (l *login) plain() error {
	c := l.cred
	if c.Username == "" || c.Password == "" {
		return fmt.Errorf("%w: VeNCrypt Plain needs a username and a password", ErrNoSecurityType)
	}
	if len(c.Username) > maxCredentialLen || len(c.Password) > maxCredentialLen {
		return fmt.Errorf("%w: username or password longer than %d bytes", ErrNoSecurityType, maxCredentialLen)
	}
	b := binary.BigEndian.AppendUint32(nil, uint32(len(c.Username)))
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.Password)))
	b = append(b, c.Username...)
	b = append(b, c.Password...)
	if err := l.write(b); err != nil {
		return fmt.Errorf("sending VeNCrypt Plain credentials: %w", err)
	}
	return nil
}

// reason reads a failure reason: a U32 length and that many bytes. One
// longer than maxReasonLen is not read.
func (l *login) reason() string {
	n, err := l.readU32()
	if err != nil {
		return "(no reason given)"
	}
	if n > maxReasonLen {
		return fmt.Sprintf("(a reason of %d bytes, not read)", n)
	}
	b := make([]byte, n)
	k, _ := io.ReadFull(l.conn, b)
	return fmt.Sprintf("%q", printable(b[:k]))
}

func (l *login) readU8() (byte, error) {
	var b [1]byte
	_, err := io.ReadFull(l.conn, b[:])
	return b[0], err
}

func (l *login) readU32() (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(l.conn, b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

func (l *login) write(b []byte) error {
	_, err := l.conn.Write(b)
	return err
}

// printable keeps a server's text safe to log: at most 200 bytes, control
// characters replaced.
func printable(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '.'
		}
		return r
	}, string(b))
}
