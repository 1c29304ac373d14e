package rfb

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
)

// The client side of the handshake, up to and including the
// SecurityResult, in one place for the proxy (Login) and the test client
// (ClientHandshake), with one set of bounds.

// The handshake's bounds, for the proxy's logins and the test client alike.
const (
	// MaxReasonLen bounds the failure reason a VNC server may send; a
	// longer one is not read, so that a hostile server cannot make a
	// client read or allocate much.
	MaxReasonLen = 4 << 10
	// MaxCredentialLen bounds a VeNCrypt Plain username or password, the
	// ones the proxy sends and the ones a native viewer sends it.
	MaxCredentialLen = 1 << 10
)

// Errors of the handshake; test them with errors.Is.
var (
	// ErrRefused: the VNC server refused the connection or the login (a
	// wrong password, a client certificate it does not accept).
	ErrRefused = errors.New("vnc server refused the login")
	// ErrAuthFailed: the server's SecurityResult said the authentication
	// failed (a wrong password, username or client certificate). It is an
	// ErrRefused; a refusal before authentication (no security types, a
	// TLS handshake that failed) is not an ErrAuthFailed.
	ErrAuthFailed = fmt.Errorf("%w: authentication failed", ErrRefused)
	// ErrNoSecurityType: nothing the server offers can be served with the
	// credentials at hand, or with RequireTLS, nothing over X.509 TLS.
	ErrNoSecurityType = errors.New("no usable security type")
	// ErrProtocol: the server broke the protocol (a greeting that is not
	// RFB 3.x, a VeNCrypt subtype count of zero).
	ErrProtocol = errors.New("vnc server broke the RFB protocol")
)

// Credentials are what a client logs in to a VNC server with: the proxy's
// from its configuration and the token, the test client's password.
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
	name := SecurityName(r.Security)
	if r.Subtype != 0 {
		name += " " + SecurityName(r.Subtype)
	}
	return name
}

// SecurityName names a security type or VeNCrypt subtype for logs and
// errors: "vnc", "x509plain", "type 16".
func SecurityName(t uint32) string {
	switch t {
	case SecurityNone:
		return "none"
	case SecurityVNCAuth:
		return "vnc"
	case SecurityVeNCrypt:
		return "vencrypt"
	case VeNCryptPlain:
		return "plain"
	case VeNCryptTLSNone:
		return "tlsnone"
	case VeNCryptTLSVnc:
		return "tlsvnc"
	case VeNCryptTLSPlain:
		return "tlsplain"
	case VeNCryptX509None:
		return "x509none"
	case VeNCryptX509Vnc:
		return "x509vnc"
	case VeNCryptX509Plain:
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
// Errors wrap ErrRefused (ErrAuthFailed when the SecurityResult says so),
// ErrNoSecurityType or ErrProtocol, or an I/O error, with the step that
// failed and the server's own reason; they never contain a credential. The
// caller bounds the whole exchange with conn's deadline; a TLS connection
// inherits it.
func Login(conn net.Conn, greeting []byte, cred Credentials) (net.Conn, Result, error) {
	l := login{rw: conn, cred: cred, maxMinor: 8}
	err := l.run(greeting)
	conn, _ = l.rw.(net.Conn) // conn, or TLS over it: always a net.Conn
	return conn, l.res, err
}

// login is one client side of the handshake, the proxy's or the test
// client's.
type login struct {
	// rw is the connection to the server. VeNCrypt's X.509 subtypes need
	// it to be a net.Conn, and replace it with the TLS connection over it.
	rw   io.ReadWriter
	cred Credentials
	// maxMinor is the highest version offered: 3.maxMinor, with maxMinor
	// 3, 7 or 8.
	maxMinor int
	// tryEmptyPassword goes ahead with VNC authentication without a
	// password, where otherwise no security type would do: the test
	// client's way, to see a server refuse it. Never the proxy's: a login
	// bound to fail would count against the proxy at servers that block
	// an address after failures (TigerVNC's blacklist).
	tryEmptyPassword bool
	res              Result
}

func (l *login) run(greeting []byte) error {
	major, minor, err := ParseVersion(greeting)
	if err != nil {
		return fmt.Errorf("%w: greeting %q is not RFB 3.x (%w)", ErrProtocol, Printable(greeting), err)
	}
	if major != 3 {
		return fmt.Errorf("%w: greeting %q is not RFB 3.x", ErrProtocol, Printable(greeting))
	}
	minor = min(UsedMinor(minor), l.maxMinor)
	l.res.Minor = minor
	if err := l.write(AppendVersion(nil, 3, minor)); err != nil {
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
			return fmt.Errorf("%w: the server wants security %s", ErrNoSecurityType, SecurityName(sec))
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
		if _, err := io.ReadFull(l.rw, offered); err != nil {
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
	case SecurityVNCAuth:
		if err := l.vncAuth(); err != nil {
			return err
		}
	case SecurityVeNCrypt:
		if err := l.veNCrypt(); err != nil {
			return err
		}
	}

	// RFB 3.3 and 3.7 skip the SecurityResult after security None.
	if sec == SecurityNone && minor < 8 {
		return nil
	}
	result, err := l.readU32()
	if err != nil {
		return fmt.Errorf("reading security result: %w", err)
	}
	if result != 0 {
		if minor == 8 {
			return fmt.Errorf("%w: %s: %s", ErrAuthFailed, l.res, l.reason())
		}
		return fmt.Errorf("%w: %s", ErrAuthFailed, l.res)
	}
	return nil
}

// usable reports whether the top-level type sec can be served, for an RFB
// 3.3 server, which names one type only.
func (l *login) usable(sec uint32) bool {
	switch sec {
	case SecurityVeNCrypt:
		return true // the subtypes decide
	case SecurityVNCAuth:
		return (l.cred.Password != "" || l.tryEmptyPassword) && !l.cred.RequireTLS
	case SecurityNone:
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
	case has(SecurityVeNCrypt) && c.TLS != nil:
		return SecurityVeNCrypt, nil
	case c.RequireTLS:
		return 0, fmt.Errorf("%w: require_tls is set and the server offers no VeNCrypt (offers %s)", ErrNoSecurityType, typeList(offered))
	case has(SecurityVNCAuth) && c.Password != "":
		return SecurityVNCAuth, nil
	case has(SecurityVeNCrypt) && c.Password != "" && c.Username != "":
		return SecurityVeNCrypt, nil
	case has(SecurityNone):
		return SecurityNone, nil
	case has(SecurityVNCAuth) && l.tryEmptyPassword:
		return SecurityVNCAuth, nil
	case has(SecurityVNCAuth):
		return 0, fmt.Errorf("%w: the server asks for a VNC password and none is configured", ErrNoSecurityType)
	case has(SecurityVeNCrypt):
		return 0, fmt.Errorf("%w: the server offers only VeNCrypt and no tls (or username and password) is configured", ErrNoSecurityType)
	}
	return 0, fmt.Errorf("%w: the server offers %s", ErrNoSecurityType, typeList(offered))
}

func typeList(types []byte) string {
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = SecurityName(uint32(t))
	}
	return "[" + strings.Join(names, " ") + "]"
}

func (l *login) vncAuth() error {
	if l.cred.Password == "" && !l.tryEmptyPassword {
		return fmt.Errorf("%w: the server asks for a VNC password and none is configured", ErrNoSecurityType)
	}
	var challenge [16]byte
	if _, err := io.ReadFull(l.rw, challenge[:]); err != nil {
		return fmt.Errorf("reading VNC authentication challenge: %w", err)
	}
	resp := VNCAuthResponse(l.cred.Password, challenge)
	if err := l.write(resp[:]); err != nil {
		return fmt.Errorf("sending VNC authentication response: %w", err)
	}
	return nil
}

// veNCrypt runs VeNCrypt 0.2: version, subtype, and for X.509 subtypes the
// TLS handshake, then the subtype's own authentication.
func (l *login) veNCrypt() error {
	var v [2]byte
	if _, err := io.ReadFull(l.rw, v[:]); err != nil {
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
	if _, err := io.ReadFull(l.rw, buf); err != nil {
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
		return fmt.Errorf("%w: the server refused VeNCrypt %s", ErrRefused, SecurityName(sub))
	}

	switch sub {
	case VeNCryptX509None, VeNCryptX509Vnc, VeNCryptX509Plain:
		conn, ok := l.rw.(net.Conn)
		if !ok {
			// Only Login gives credentials with TLS, and always a net.Conn.
			return fmt.Errorf("%w: VeNCrypt %s needs a network connection for TLS", ErrNoSecurityType, SecurityName(sub))
		}
		tc := tls.Client(conn, l.cred.TLS)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("%w: TLS handshake: %v", ErrRefused, err)
		}
		l.rw = tc
	}
	switch sub {
	case SecurityVNCAuth, VeNCryptX509Vnc:
		return l.vncAuth()
	case VeNCryptPlain, VeNCryptX509Plain:
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
			prefs = append(prefs, VeNCryptX509Plain)
		}
		if c.Password != "" {
			prefs = append(prefs, VeNCryptX509Vnc)
		}
		prefs = append(prefs, VeNCryptX509None)
	}
	if !c.RequireTLS {
		if c.Password != "" {
			prefs = append(prefs, SecurityVNCAuth)
		}
		if c.Username != "" && c.Password != "" {
			prefs = append(prefs, VeNCryptPlain)
		}
		prefs = append(prefs, SecurityNone)
	}
	for _, p := range prefs {
		if slices.Contains(offered, p) {
			return p, nil
		}
	}
	names := make([]string, len(offered))
	anonymous := false
	for i, t := range offered {
		names[i] = SecurityName(t)
		anonymous = anonymous || t == VeNCryptTLSNone || t == VeNCryptTLSVnc || t == VeNCryptTLSPlain
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
	if len(c.Username) > MaxCredentialLen || len(c.Password) > MaxCredentialLen {
		return fmt.Errorf("%w: username or password longer than %d bytes", ErrNoSecurityType, MaxCredentialLen)
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
// longer than MaxReasonLen is not read.
func (l *login) reason() string {
	n, err := l.readU32()
	if err != nil {
		return "(no reason given)"
	}
	if n > MaxReasonLen {
		return fmt.Sprintf("(a reason of %d bytes, not read)", n)
	}
	b := make([]byte, n)
	k, _ := io.ReadFull(l.rw, b)
	return fmt.Sprintf("%q", Printable(b[:k]))
}

func (l *login) readU8() (byte, error) {
	var b [1]byte
	_, err := io.ReadFull(l.rw, b[:])
	return b[0], err
}

func (l *login) readU32() (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(l.rw, b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

func (l *login) write(b []byte) error {
	_, err := l.rw.Write(b)
	return err
}

// Printable keeps a peer's text safe to log: at most 200 bytes, control
// characters replaced.
func Printable(b []byte) string {
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
