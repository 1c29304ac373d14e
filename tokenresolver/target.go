package tokenresolver

import "errors"

// ParseTarget parses a target as written in a websockify token file:
// host:port, [v6addr]:port, bare IPv6 with the port after the last colon
// (fe80::1:5900), unix_socket:/path or unix:/path.
func ParseTarget(s string) (Target, error) {
	return Target{}, errors.New("not implemented")
}

// ParseValue parses a resolver's answer for one token (a Redis value, an HTTP
// callback's 200 body): plain text host:port, JSON {"host": "h:p"}, JSON
// {"host": "h", "port": 5901}, with the optional fields "expires_at" (RFC 3339
// or Unix seconds) and "password".
func ParseValue(b []byte) (Target, error) {
	return Target{}, errors.New("not implemented")
}
