package tokenresolver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxValueSize is the largest resolver answer ParseValue accepts, in bytes.
// A record for one token is a few dozen bytes; anything near this size is a
// misconfigured callback (an HTML error page, say), not a target.
const MaxValueSize = 64 << 10

// maxQuoted bounds how much of a malformed input an error message repeats.
const maxQuoted = 80

// ParseTarget parses a target as written in a websockify token file:
// host:port, [v6addr]:port, bare IPv6 with the port after the last colon
// (fe80::1:5900), unix_socket:/path or unix:/path. Surrounding whitespace is
// ignored.
//
// A tcp target's Address is normalised with net.JoinHostPort, so IPv6 hosts
// come back in brackets. "unix_socket:" takes any non-empty path, as
// websockify does; "unix:" takes an absolute path only, so that "unix:5900"
// still means the host named unix.
//
// Errors repeat the target text (shortened) and nothing else.
func ParseTarget(s string) (Target, error) {
	return parseTarget(s, quote)
}

// parseTarget is ParseTarget with q to show input text in errors: quote
// for the operator's own files, redact for resolver answers.
func parseTarget(s string, q func(string) string) (Target, error) {
	s = strings.TrimFunc(s, isSpace)
	if s == "" {
		return Target{}, errors.New("empty target")
	}
	if path, ok := strings.CutPrefix(s, "unix_socket:"); ok {
		return unixTarget(path, s, q)
	}
	if path, ok := strings.CutPrefix(s, "unix:"); ok && strings.HasPrefix(path, "/") {
		return unixTarget(path, s, q)
	}

	var host, port string
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return Target{}, fmt.Errorf("invalid target %s: missing ']' after IPv6 address", q(s))
		}
		host = s[1:end]
		rest := s[end+1:]
		if !strings.HasPrefix(rest, ":") {
			return Target{}, fmt.Errorf("invalid target %s: missing ':<port>' after ']'", q(s))
		}
		port = rest[1:]
		if host == "" || !isIPv6(host) {
			return Target{}, fmt.Errorf("invalid target %s: %s is not an IPv6 address", q(s), q(host))
		}
	} else {
		i := strings.LastIndexByte(s, ':')
		if i < 0 {
			return Target{}, fmt.Errorf("invalid target %s: missing ':<port>'", q(s))
		}
		host, port = s[:i], s[i+1:]
	}
	return tcpTarget(host, port, s, q)
}

// TargetFromHostPort builds a target from a separate host and port, as in
// websockify's JSONTokenApi answers and JWTTokenApi claims. port may be an
// integer of any Go integer type, a float64 or json.Number holding an
// integer (as encoding/json decodes numbers), or a string of digits. A host of
// "unix_socket" makes port the socket path, as in websockify. The host may be
// an IPv6 address with or without brackets. Errors do not repeat the host.
func TargetFromHostPort(host string, port any) (Target, error) {
	return targetFromHostPort(host, port, redact)
}

func targetFromHostPort(host string, port any, q func(string) string) (Target, error) {
	if host == "unix_socket" {
		path, ok := port.(string)
		if !ok {
			return Target{}, errors.New(`invalid target: host "unix_socket" needs the socket path as a string port`)
		}
		return unixTarget(path, "unix_socket:"+path, q)
	}
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
		if !isIPv6(host) {
			return Target{}, fmt.Errorf("invalid host %s: not an IPv6 address", q("["+host+"]"))
		}
	}
	p, err := portString(port)
	if err != nil {
		return Target{}, err
	}
	return tcpTarget(host, p, host+":"+p, q)
}

// portString turns a decoded port of any accepted type into its decimal text,
// leaving range checks to tcpTarget.
func portString(port any) (string, error) {
	switch p := port.(type) {
	case nil:
		return "", errors.New("invalid target: missing port")
	case string:
		return p, nil
	case json.Number:
		return p.String(), nil
	case float64:
		if p != math.Trunc(p) || p < 0 || p > math.MaxUint16 {
			return "", errors.New("invalid port: not a whole number in 1-65535")
		}
		return strconv.FormatFloat(p, 'f', 0, 64), nil
	case float32:
		return portString(float64(p))
	case int:
		return strconv.FormatInt(int64(p), 10), nil
	case int8:
		return strconv.FormatInt(int64(p), 10), nil
	case int16:
		return strconv.FormatInt(int64(p), 10), nil
	case int32:
		return strconv.FormatInt(int64(p), 10), nil
	case int64:
		return strconv.FormatInt(p, 10), nil
	case uint:
		return strconv.FormatUint(uint64(p), 10), nil
	case uint8:
		return strconv.FormatUint(uint64(p), 10), nil
	case uint16:
		return strconv.FormatUint(uint64(p), 10), nil
	case uint32:
		return strconv.FormatUint(uint64(p), 10), nil
	case uint64:
		return strconv.FormatUint(p, 10), nil
	default:
		return "", fmt.Errorf("invalid port: a %T, want a number or a string of digits", port)
	}
}

// tcpTarget validates host and port and joins them; orig is the text they
// came from, shown in errors through q.
func tcpTarget(host, port, orig string, q func(string) string) (Target, error) {
	if host == "" {
		return Target{}, fmt.Errorf("invalid target %s: empty host", q(orig))
	}
	if strings.IndexByte(host, ':') >= 0 {
		// Only an IPv6 address may contain colons; websockify's rule puts
		// the port after the last one.
		if !isIPv6(host) {
			return Target{}, fmt.Errorf("invalid target %s: %s is neither a host name nor an IPv6 address", q(orig), q(host))
		}
	} else if !isHostName(host) {
		return Target{}, fmt.Errorf("invalid target %s: invalid host %s", q(orig), q(host))
	}
	n, ok := parsePort(port)
	if !ok {
		return Target{}, fmt.Errorf("invalid target %s: invalid port %s (want 1-65535)", q(orig), q(port))
	}
	return Target{Network: "tcp", Address: net.JoinHostPort(host, strconv.Itoa(n))}, nil
}

func unixTarget(path, orig string, q func(string) string) (Target, error) {
	path = strings.TrimFunc(path, isSpace)
	if path == "" {
		return Target{}, fmt.Errorf("invalid target %s: empty socket path", q(orig))
	}
	if strings.IndexByte(path, 0) >= 0 {
		return Target{}, fmt.Errorf("invalid target %s: NUL byte in socket path", q(orig))
	}
	return Target{Network: "unix", Address: path}, nil
}

// parsePort accepts 1 to 5 decimal digits with a value in 1..65535.
func parsePort(s string) (int, bool) {
	if s == "" || len(s) > 5 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n >= 1 && n <= 65535
}

// isIPv6 accepts an IPv6 address with an optional zone made of host name
// characters (an interface name or index).
func isIPv6(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6() && isHostName(a.Zone())
}

// isHostName accepts DNS names and IPv4 literals: letters, digits, '-', '.',
// and '_' (common in internal names), at most 253 bytes.
func isHostName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return true
}

// isSpace matches Python's str.isspace, which websockify's strip() and
// re.split(r':\s') use: Unicode white space plus the ASCII separators
// U+001C..U+001F.
func isSpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
}

// redact stands for resolver answer text in errors: an answer may carry a
// password, or echo the token, so errors say only how long the text was.
func redact(string) string { return "(not shown)" }

// quote returns s quoted for an error message, shortened to maxQuoted bytes
// on a rune boundary.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}

// ParseValue parses a resolver's answer for one token (a Redis value, an HTTP
// callback's 200 body): plain text host:port (or any other ParseTarget form),
// JSON {"host": "h:p"}, JSON {"host": "h", "port": 5901} (port a number or a
// string of digits), with the optional fields "expires_at" (RFC 3339 string,
// or Unix seconds as a number or a string of digits), "password" and
// "username" (the VNC server's credentials, for the RFB-aware mode) and
// "view_only" and "record" (true or false) and "clipboard" ("both", "copy",
// "paste" or "none"). nova's answer, {"console": {"host": ...,
// "port": ..., "internal_access_path": null}}, is read too, for every
// console type (novnc, spice-html5, serial: the answer does not say
// which); its "tls_port" (microversion 2.99, SPICE) is not used, and a
// console with a tls_port but no port is refused. Other JSON fields are
// ignored. Values over MaxValueSize bytes are rejected.
//
// ParseValue does not judge expiry: the caller compares the result with its
// clock through Target.Expired. Its errors say what is wrong, never what
// the answer holds: answers may carry passwords or echo the token.
func ParseValue(b []byte) (Target, error) {
	if len(b) > MaxValueSize {
		return Target{}, fmt.Errorf("value too large: %d bytes, limit %d", len(b), MaxValueSize)
	}
	b = bytes.TrimFunc(b, isSpace)
	if len(b) == 0 {
		return Target{}, errors.New("empty value")
	}
	if b[0] != '{' {
		t, err := parseTarget(string(b), redact)
		if err != nil {
			return Target{}, fmt.Errorf("plain-text answer of %d bytes: %w", len(b), err)
		}
		return t, nil
	}

	return parseJSONValue(b, true)
}

// parseJSONValue parses a JSON answer; with outer, one whose target is in
// nova's shape, {"console": {"host": ..., "port": ...}}, is read too.
func parseJSONValue(b []byte, outer bool) (Target, error) {
	var v struct {
		Host               json.RawMessage `json:"host"`
		Port               json.RawMessage `json:"port"`
		ExpiresAt          json.RawMessage `json:"expires_at"`
		Password           json.RawMessage `json:"password"`
		Username           json.RawMessage `json:"username"`
		ViewOnly           json.RawMessage `json:"view_only"`
		Clipboard          json.RawMessage `json:"clipboard"`
		Record             json.RawMessage `json:"record"`
		Console            json.RawMessage `json:"console"`
		InternalAccessPath json.RawMessage `json:"internal_access_path"`
		TLSPort            json.RawMessage `json:"tls_port"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return Target{}, fmt.Errorf("invalid JSON value of %d bytes: syntax error at byte %d", len(b), se.Offset)
		}
		return Target{}, fmt.Errorf("invalid JSON value of %d bytes", len(b))
	}
	host, err := jsonString(v.Host, "host")
	if err != nil {
		return Target{}, err
	}
	if host == nil && outer && !isNull(v.Console) && v.Console[0] == '{' {
		// nova's os-console-auth-tokens answer.
		return parseJSONValue(v.Console, false)
	}
	if host == nil {
		return Target{}, errors.New(`JSON value has no "host"`)
	}
	if !outer && !isNull(v.InternalAccessPath) {
		return Target{}, errors.New(`nova's console has an "internal_access_path", which this proxy does not serve (it is for consoles behind a hypervisor-side proxy)`)
	}
	if !outer && isNull(v.Port) && !isNull(v.TLSPort) {
		// The proxy speaks plain TCP to the hypervisor, as
		// nova-spicehtml5proxy does; a SPICE server that only listens
		// for TLS needs a client that does TLS itself.
		return Target{}, errors.New(`nova's console has only a "tls_port", and this proxy does not speak TLS to the hypervisor's SPICE server`)
	}

	var t Target
	if isNull(v.Port) {
		t, err = parseTarget(*host, redact)
	} else {
		var port any
		port, err = jsonPort(v.Port)
		if err == nil {
			t, err = targetFromHostPort(*host, port, redact)
		}
	}
	if err != nil {
		return Target{}, err
	}

	if t.ExpiresAt, err = parseExpiresAt(v.ExpiresAt); err != nil {
		return Target{}, err
	}
	password, err := jsonString(v.Password, "password")
	if err != nil {
		return Target{}, err
	}
	if password != nil {
		t.Password = *password
	}
	username, err := jsonString(v.Username, "username")
	if err != nil {
		return Target{}, err
	}
	if username != nil {
		t.Username = *username
	}
	if !isNull(v.ViewOnly) {
		if err := json.Unmarshal(v.ViewOnly, &t.ViewOnly); err != nil {
			return Target{}, errors.New(`JSON field "view_only" must be true or false`)
		}
	}
	if !isNull(v.Record) {
		if err := json.Unmarshal(v.Record, &t.Record); err != nil {
			return Target{}, errors.New(`JSON field "record" must be true or false`)
		}
	}
	clipboard, err := jsonString(v.Clipboard, "clipboard")
	if err != nil {
		return Target{}, err
	}
	if clipboard != nil {
		if t.Clipboard, err = parseClipboard(*clipboard); err != nil {
			return Target{}, err
		}
	}
	return t, nil
}

// parseClipboard checks a record's "clipboard" grant.
func parseClipboard(s string) (string, error) {
	switch s {
	case "both", "copy", "paste", "none":
		return s, nil
	}
	return "", errors.New(`JSON field "clipboard" must be "both", "copy", "paste" or "none"`)
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// jsonString decodes an optional JSON string field; nil when absent or null.
func jsonString(raw json.RawMessage, field string) (*string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("JSON field %q must be a string", field)
	}
	return &s, nil
}

// jsonPort decodes "port" as a json.Number or a string.
func jsonPort(raw json.RawMessage) (any, error) {
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, errors.New(`JSON field "port" must be a number or a string of digits`)
		}
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, errors.New(`JSON field "port" must be a number or a string of digits`)
	}
	return n, nil
}

// maxUnixSeconds is the year 5138: a larger expires_at is almost certainly
// milliseconds, and saying so beats accepting a token that never expires.
const maxUnixSeconds = 1e11

func parseExpiresAt(raw json.RawMessage) (time.Time, error) {
	if isNull(raw) {
		return time.Time{}, nil
	}
	var text string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &text); err != nil {
			return time.Time{}, errors.New(`JSON field "expires_at" must be an RFC 3339 string or Unix seconds`)
		}
		if t, err := time.Parse(time.RFC3339, text); err == nil {
			// As for Unix seconds: a time at or before 1970 is a mistake,
			// and 0001-01-01T00:00:00Z would read as no expiry at all.
			if t.Unix() <= 0 {
				return time.Time{}, errors.New(`JSON field "expires_at" must be after 1970`)
			}
			return t, nil
		}
		if !allDigits(text) {
			return time.Time{}, errors.New(`JSON field "expires_at" is neither RFC 3339 nor Unix seconds`)
		}
	} else {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return time.Time{}, errors.New(`JSON field "expires_at" must be an RFC 3339 string or Unix seconds`)
		}
		text = n.String()
	}
	secs, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsNaN(secs) || math.IsInf(secs, 0) {
		return time.Time{}, errors.New(`JSON field "expires_at": invalid Unix seconds`)
	}
	if secs <= 0 {
		return time.Time{}, errors.New(`JSON field "expires_at": Unix seconds must be positive`)
	}
	if secs >= maxUnixSeconds {
		return time.Time{}, errors.New(`JSON field "expires_at" is too far in the future for Unix seconds (milliseconds?)`)
	}
	whole, frac := math.Modf(secs)
	return time.Unix(int64(whole), int64(frac*1e9)).UTC(), nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
