package admission

import (
	"net/netip"
	"testing"
)

func TestParseTargetRule(t *testing.T) {
	cases := []struct {
		in   string
		addr string // an address to check, ip:port
		name string
		ok   bool
	}{
		{"10.0.0.0/8", "10.1.2.3:5900", "", true},
		{"10.0.0.0/8", "11.0.0.1:5900", "", false},
		{"10.0.0.0/8:5900-5999", "10.1.2.3:5999", "", true},
		{"10.0.0.0/8:5900-5999", "10.1.2.3:6379", "", false},
		{"192.0.2.7:5901", "192.0.2.7:5901", "", true},
		{"192.0.2.7:5901", "192.0.2.7:5902", "", false},
		{"192.0.2.7", "[::ffff:192.0.2.7]:5900", "", true}, // IPv4-mapped
		{"fd00::/8", "[fd12::5]:5900", "", true},
		{"[fd00::/8]:5900-5910", "[fd12::5]:5911", "", false},
		{"[fe80::1]:5900", "[fe80::1%eth0]:5900", "", true}, // zone ignored
		{"compute-1.internal:5900-5999", "10.9.9.9:5901", "Compute-1.Internal", true},
		{"compute-1.internal:5900-5999", "10.9.9.9:5901", "compute-2.internal", false},
	}
	for _, c := range cases {
		r, err := parseTargetRule(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if got := (targetPolicy{r}).allowsAddress(c.name, netip.MustParseAddrPort(c.addr)); got != c.ok {
			t.Errorf("%s allows %s (name %q): %v, want %v", c.in, c.addr, c.name, got, c.ok)
		}
	}
	for _, bad := range []string{"10.0.0.0/8:0", "10.0.0.0/8:6000-5900", "h:70000", "unix:relative/", "[fd00::1", "fe80::1%eth0", "a b", "ftp://x"} {
		if _, err := parseTargetRule(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	unix, _ := parseTargetRule("unix:/run/vnc")
	for path, ok := range map[string]bool{
		"/run/vnc/vm1.sock":        true,
		"/run/vnc/../docker.sock":  false,
		"/run/vncevil/vm1.sock":    false,
		"/run/vnc/sub/../vm2.sock": true,
	} {
		if got := (targetPolicy{unix}).allowsUnix(path); got != ok {
			t.Errorf("unix:/run/vnc allows %s: %v, want %v", path, got, ok)
		}
	}
}
