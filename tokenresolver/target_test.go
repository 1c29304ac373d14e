package tokenresolver

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in      string
		network string
		address string
	}{
		{"localhost:5900", "tcp", "localhost:5900"},
		{"10.0.0.5:5901", "tcp", "10.0.0.5:5901"},
		{"vm-1.internal.example:65535", "tcp", "vm-1.internal.example:65535"},
		{"my_host:1", "tcp", "my_host:1"},
		{"  host:5900 \t\r\n", "tcp", "host:5900"},
		{"host:05900", "tcp", "host:5900"},
		{"[::1]:5900", "tcp", "[::1]:5900"},
		{"[fe80::1%eth0]:5900", "tcp", "[fe80::1%eth0]:5900"},
		{"[2001:db8::17]:5902", "tcp", "[2001:db8::17]:5902"},
		{"fe80::1:5900", "tcp", "[fe80::1]:5900"},
		{"2001:db8::1:2:5900", "tcp", "[2001:db8::1:2]:5900"},
		{"::ffff:10.0.0.1:5900", "tcp", "[::ffff:10.0.0.1]:5900"},
		{"unix_socket:/run/vnc/vm1.sock", "unix", "/run/vnc/vm1.sock"},
		{"unix_socket:relative/vm1.sock", "unix", "relative/vm1.sock"},
		{"unix:/run/vnc/vm1.sock", "unix", "/run/vnc/vm1.sock"},
		{"unix:5900", "tcp", "unix:5900"},
	}
	for _, tt := range tests {
		got, err := ParseTarget(tt.in)
		if err != nil {
			t.Errorf("ParseTarget(%q): %v", tt.in, err)
			continue
		}
		want := Target{Network: tt.network, Address: tt.address}
		if got != want {
			t.Errorf("ParseTarget(%q) = %+v, want %+v", tt.in, got, want)
		}
	}
}

func TestParseTargetErrors(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"", "empty target"},
		{"   ", "empty target"},
		{"host", `invalid target "host": missing ':<port>'`},
		{"host:", `invalid port`},
		{":5900", "empty host"},
		{"host:0", `invalid port`},
		{"host:65536", `invalid port`},
		{"host:999999", `invalid port`},
		{"host:-1", `invalid port`},
		{"host:+80", `invalid port`},
		{"host:x", `invalid port`},
		{"host:59 00", `invalid port`},
		{"host:5900 # comment", `invalid port`},
		{"ho st:5900", `invalid host "ho st"`},
		{"host/x:5900", `invalid host "host/x"`},
		{"user@host:5900", `invalid host "user@host"`},
		{"[::1]", "missing ':<port>' after ']'"},
		{"[::1]5900", "missing ':<port>' after ']'"},
		{"[::1:5900", "missing ']'"},
		{"[]:5900", "is not an IPv6 address"},
		{"[10.0.0.1]:5900", "is not an IPv6 address"},
		{"[vm1]:5900", "is not an IPv6 address"},
		{"::%]:10", "neither a host name nor an IPv6 address"},
		{"[fe80::1%a/b]:10", "is not an IPv6 address"},
		{"::1", "neither a host name nor an IPv6 address"},
		{"fe80::1", "neither a host name nor an IPv6 address"},
		{"a:b:5900", "neither a host name nor an IPv6 address"},
		{"unix_socket:", "empty socket path"},
		{"unix_socket:   ", "empty socket path"},
		{"unix_socket:/a\x00b", "NUL byte"},
		{"unix:relative", `invalid port`},
		{"host:" + strings.Repeat("9", 200), `"...`},
	}
	for _, tt := range tests {
		got, err := ParseTarget(tt.in)
		if err == nil {
			t.Errorf("ParseTarget(%q) = %+v, want an error containing %q", tt.in, got, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseTarget(%q) error %q, want it to contain %q", tt.in, err, tt.wantErr)
		}
		if len(err.Error()) > 2*maxQuoted+100 {
			t.Errorf("ParseTarget(%q) error is %d bytes long: %q", tt.in, len(err.Error()), err)
		}
	}
}

func TestTargetFromHostPort(t *testing.T) {
	tests := []struct {
		host    string
		port    any
		want    Target
		wantErr string
	}{
		{"10.0.0.5", 5901, Target{Network: "tcp", Address: "10.0.0.5:5901"}, ""},
		{"10.0.0.5", float64(5901), Target{Network: "tcp", Address: "10.0.0.5:5901"}, ""},
		{"10.0.0.5", json.Number("5901"), Target{Network: "tcp", Address: "10.0.0.5:5901"}, ""},
		{"10.0.0.5", "5901", Target{Network: "tcp", Address: "10.0.0.5:5901"}, ""},
		{"10.0.0.5", int64(5901), Target{Network: "tcp", Address: "10.0.0.5:5901"}, ""},
		{"10.0.0.5", uint16(5901), Target{Network: "tcp", Address: "10.0.0.5:5901"}, ""},
		{"fe80::1", 5900, Target{Network: "tcp", Address: "[fe80::1]:5900"}, ""},
		{"[fe80::1]", 5900, Target{Network: "tcp", Address: "[fe80::1]:5900"}, ""},
		{"unix_socket", "/run/vm.sock", Target{Network: "unix", Address: "/run/vm.sock"}, ""},
		{"unix_socket", 5900, Target{}, "socket path as a string"},
		{"", 5900, Target{}, "empty host"},
		{"h", nil, Target{}, "missing port"},
		{"h", 0, Target{}, `invalid port`},
		{"h", 65536, Target{}, `invalid port`},
		{"h", -5, Target{}, `invalid port`},
		{"h", 5900.5, Target{}, "invalid port"},
		{"h", float64(1e9), Target{}, "invalid port"},
		{"h", json.Number("5901.0"), Target{}, `invalid port`},
		{"h", "x", Target{}, `invalid port`},
		{"h", true, Target{}, "want a number or a string of digits"},
		{"h:5900", 5900, Target{}, "neither a host name nor an IPv6 address"},
		{"[vm]", 5900, Target{}, "not an IPv6 address"},
	}
	for _, tt := range tests {
		got, err := TargetFromHostPort(tt.host, tt.port)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("TargetFromHostPort(%q, %#v) = %+v, %v; want error containing %q", tt.host, tt.port, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("TargetFromHostPort(%q, %#v) = %+v, %v; want %+v", tt.host, tt.port, got, err, tt.want)
		}
	}
}

func TestParseValue(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want Target
	}{
		// websockify TokenRedis (plain), BaseTokenAPI
		{"10.0.0.5:5901", Target{Network: "tcp", Address: "10.0.0.5:5901"}},
		{"10.0.0.5:5901\n", Target{Network: "tcp", Address: "10.0.0.5:5901"}},
		{"  [::1]:5900\r\n", Target{Network: "tcp", Address: "[::1]:5900"}},
		{"fe80::1:5900", Target{Network: "tcp", Address: "[fe80::1]:5900"}},
		{"unix_socket:/run/vm.sock", Target{Network: "unix", Address: "/run/vm.sock"}},
		{"unix:/run/vm.sock", Target{Network: "unix", Address: "/run/vm.sock"}},
		// websockify TokenRedis JSON
		{`{"host": "127.0.0.1:5000"}`, Target{Network: "tcp", Address: "127.0.0.1:5000"}},
		{`{"host": "unix_socket:/run/vm.sock"}`, Target{Network: "unix", Address: "/run/vm.sock"}},
		// websockify JSONTokenApi
		{`{"host": "10.0.0.5", "port": 5901}`, Target{Network: "tcp", Address: "10.0.0.5:5901"}},
		{`{"host": "10.0.0.5", "port": "5901"}`, Target{Network: "tcp", Address: "10.0.0.5:5901"}},
		{`{"host": "2001:db8::5", "port": 5901}`, Target{Network: "tcp", Address: "[2001:db8::5]:5901"}},
		{`{"host": "unix_socket", "port": "/run/vm.sock"}`, Target{Network: "unix", Address: "/run/vm.sock"}},
		{`{"host": "10.0.0.5:5901", "port": null}`, Target{Network: "tcp", Address: "10.0.0.5:5901"}},
		// extra fields
		{`{"host": "h:1", "expires_at": "2030-01-02T03:04:05Z"}`, Target{Network: "tcp", Address: "h:1", ExpiresAt: exp}},
		{`{"host": "h:1", "expires_at": "2030-01-02T04:04:05+01:00"}`, Target{Network: "tcp", Address: "h:1", ExpiresAt: exp}},
		{fmt.Sprintf(`{"host": "h:1", "expires_at": %d}`, exp.Unix()), Target{Network: "tcp", Address: "h:1", ExpiresAt: exp}},
		{fmt.Sprintf(`{"host": "h:1", "expires_at": "%d"}`, exp.Unix()), Target{Network: "tcp", Address: "h:1", ExpiresAt: exp}},
		{fmt.Sprintf(`{"host": "h:1", "expires_at": %d.5}`, exp.Unix()), Target{Network: "tcp", Address: "h:1", ExpiresAt: exp.Add(500 * time.Millisecond)}},
		{`{"host": "h:1", "expires_at": null}`, Target{Network: "tcp", Address: "h:1"}},
		{`{"host": "h", "port": 1, "password": "s3cret"}`, Target{Network: "tcp", Address: "h:1", Password: "s3cret"}},
		{`{"host": "h:1", "password": "p", "username": "u", "view_only": true}`, Target{Network: "tcp", Address: "h:1", Password: "p", Username: "u", ViewOnly: true}},
		{`{"host": "h:1", "view_only": false}`, Target{Network: "tcp", Address: "h:1"}},
		{`{"host": "h:1", "clipboard": "copy"}`, Target{Network: "tcp", Address: "h:1", Clipboard: "copy"}},
		{`{"host": "h:1", "clipboard": "none", "view_only": true}`, Target{Network: "tcp", Address: "h:1", Clipboard: "none", ViewOnly: true}},
		{`{"host": "h:1", "clipboard": null}`, Target{Network: "tcp", Address: "h:1"}},
		{`{"host": "h:1", "record": true}`, Target{Network: "tcp", Address: "h:1", Record: true}},
		{`{"host": "h", "port": 1, "user": "ignored", "nested": {"a": [1]}}`, Target{Network: "tcp", Address: "h:1"}},
	}
	for _, tt := range tests {
		got, err := ParseValue([]byte(tt.in))
		if err != nil {
			t.Errorf("ParseValue(%q): %v", tt.in, err)
			continue
		}
		if !got.ExpiresAt.Equal(tt.want.ExpiresAt) {
			t.Errorf("ParseValue(%q).ExpiresAt = %v, want %v", tt.in, got.ExpiresAt, tt.want.ExpiresAt)
		}
		got.ExpiresAt, tt.want.ExpiresAt = time.Time{}, time.Time{}
		if got != tt.want {
			t.Errorf("ParseValue(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseValueErrors(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"", "empty value"},
		{" \n\t", "empty value"},
		{"garbage", "missing ':<port>'"},
		{"<html><body>502 Bad Gateway</body></html>", "invalid"},
		{"h:99999", `invalid port`},
		{`{`, "invalid JSON value"},
		{`{"host": "h:1"} trailing`, "invalid JSON value"},
		{`{}`, `no "host"`},
		{`{"host": null}`, `no "host"`},
		{`{"host": 5}`, `"host" must be a string`},
		{`{"host": "h"}`, "missing ':<port>'"},
		{`{"host": "h", "port": true}`, `"port" must be a number`},
		{`{"host": "h", "port": 0}`, `invalid port`},
		{`{"host": "h", "port": 70000}`, `invalid port`},
		{`{"host": "h", "port": 5901.5}`, `invalid port`},
		{`{"host": "h", "port": "59x"}`, `invalid port`},
		{`{"host": "h:1", "expires_at": "tomorrow"}`, "neither RFC 3339 nor Unix seconds"},
		{`{"host": "h:1", "expires_at": true}`, "must be an RFC 3339 string or Unix seconds"},
		{`{"host": "h:1", "expires_at": 0}`, "must be positive"},
		{`{"host": "h:1", "expires_at": -5}`, "must be positive"},
		{`{"host": "h:1", "expires_at": "0001-01-01T00:00:00Z"}`, "after 1970"},
		{`{"host": "h:1", "expires_at": "1969-12-31T23:59:59Z"}`, "after 1970"},
		{`{"host": "h:1", "expires_at": 1893456000000}`, "milliseconds"},
		{`{"host": "h:1", "password": 1234}`, `"password" must be a string`},
		{`{"host": "h:1", "username": true}`, `"username" must be a string`},
		{`{"host": "h:1", "view_only": "yes"}`, `"view_only" must be true or false`},
		{`{"host": "h:1", "clipboard": "off"}`, `"clipboard" must be "both", "copy", "paste" or "none"`},
		{`{"host": "h:1", "clipboard": false}`, `"clipboard" must be a string`},
		{`{"host": "h:1", "record": 1}`, `"record" must be true or false`},
		{strings.Repeat(" ", MaxValueSize+1), "value too large"},
	}
	for _, tt := range tests {
		got, err := ParseValue([]byte(tt.in))
		if err == nil {
			t.Errorf("ParseValue(%q) = %+v, want an error containing %q", tt.in, got, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseValue(%q) error %q, want it to contain %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestParseValueErrorHidesPassword(t *testing.T) {
	_, err := ParseValue([]byte(`{"host": "h", "port": 0, "password": "hunter2"}`))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %v: want an error without the password", err)
	}
}

// TestParseValueErrorsHideContent: an answer may echo the token or carry
// secrets, so no part of a malformed answer reaches an error (and the log).
func TestParseValueErrorsHideContent(t *testing.T) {
	for _, in := range []string{
		`s3cr3t-token-echo`,
		`s3cr3t-token-echo:99999`,
		`<html>s3cr3t-token-echo</html>`,
		`{"host": "s3cr3t-token-echo"}`,
		`{"host": "s3cr3t-token-echo", "port": 70000}`,
		`{"host": "s3cr3t-token-echo", "port": "s3cr3t"}`,
		`{"host": "[s3cr3t-token-echo]", "port": 1}`,
		`{"host": "unix_socket", "port": "s3cr3t\u0000"}`,
		`{"host": "h:1", "expires_at": "s3cr3t-token-echo"}`,
		`{"host": "h:1", "s3cr3t-token-echo`,
		`{"host": s3cr3t}`,
	} {
		_, err := ParseValue([]byte(in))
		if err == nil {
			t.Errorf("ParseValue(%q): no error", in)
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("ParseValue(%q) error %q shows the answer's content", in, err)
		}
	}
}

// checkTarget is what every successful parse must satisfy.
func checkTarget(t *testing.T, in string, got Target) {
	t.Helper()
	switch got.Network {
	case "tcp":
		host, port, err := net.SplitHostPort(got.Address)
		if err != nil {
			t.Fatalf("parse of %q gave tcp address %q that does not split: %v", in, got.Address, err)
		}
		if host == "" {
			t.Fatalf("parse of %q gave an empty host in %q", in, got.Address)
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			t.Fatalf("parse of %q gave port %q", in, port)
		}
		if net.JoinHostPort(host, port) != got.Address {
			t.Fatalf("parse of %q gave address %q that does not round-trip", in, got.Address)
		}
		again, err := ParseTarget(got.Address)
		if err != nil || again.Network != "tcp" || again.Address != got.Address {
			t.Fatalf("reparsing %q (from %q) = %+v, %v", got.Address, in, again, err)
		}
	case "unix":
		if got.Address == "" || strings.IndexByte(got.Address, 0) >= 0 {
			t.Fatalf("parse of %q gave unix path %q", in, got.Address)
		}
	default:
		t.Fatalf("parse of %q gave network %q", in, got.Network)
	}
}

var targetSeeds = []string{
	"localhost:5900", "10.0.0.5:5901", "[::1]:5900", "[fe80::1%eth0]:5900",
	"fe80::1:5900", "unix_socket:/run/vm.sock", "unix:/run/vm.sock", "unix:5900",
	"host", "host:", ":5900", "host:65536", "[::1", "[]:1", "::1", " h:1 ",
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range targetSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTarget(s)
		if err != nil {
			if got != (Target{}) {
				t.Fatalf("ParseTarget(%q) returned %+v with error %v", s, got, err)
			}
			return
		}
		checkTarget(t, s, got)
	})
}

func FuzzParseValue(f *testing.F) {
	for _, s := range targetSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		`{"host": "127.0.0.1:5000"}`,
		`{"host": "10.0.0.5", "port": 5901}`,
		`{"host": "10.0.0.5", "port": "5901"}`,
		`{"host": "unix_socket", "port": "/run/vm.sock"}`,
		`{"host": "h:1", "expires_at": "2030-01-02T03:04:05Z", "password": "p"}`,
		`{"host": "h:1", "expires_at": 1893456000.25}`,
		`{"host": "h:1", "expires_at": "1893456000"}`,
		`{"host": "h", "port": 1e3}`,
		`{`, `{}`, `null`, `"h:1"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ParseValue(b)
		if err != nil {
			if got != (Target{}) {
				t.Fatalf("ParseValue(%q) returned %+v with error %v", b, got, err)
			}
			return
		}
		checkTarget(t, string(b), got)
		if !got.ExpiresAt.IsZero() && got.ExpiresAt.Unix() <= 0 {
			t.Fatalf("ParseValue(%q) gave expiry %v", b, got.ExpiresAt)
		}
	})
}
