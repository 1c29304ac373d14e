package admission

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

// errTargetNotAllowed: the token's target is outside allow_targets.
var errTargetNotAllowed = errors.New("target not allowed")

// targetRule is one entry of allow_targets.
type targetRule struct {
	prefix netip.Prefix // an IP range; invalid for the other kinds
	host   string       // a host name, in lower case
	dir    string       // a unix socket directory, ending in "/"
	lo, hi uint16       // the ports allowed; 1-65535 when none was given
}

// parseTargetRule reads an allow_targets entry: a CIDR or an IP address,
// a host name, each with an optional :port or :port-port (IPv6 in
// brackets when a port follows), or unix:/dir/.
func parseTargetRule(s string) (targetRule, error) {
	if dir, ok := strings.CutPrefix(s, "unix:"); ok {
		if !filepath.IsAbs(dir) {
			return targetRule{}, fmt.Errorf("allow_targets %q: unix: takes an absolute directory", s)
		}
		return targetRule{dir: strings.TrimSuffix(filepath.Clean(dir), "/") + "/"}, nil
	}
	r := targetRule{lo: 1, hi: 65535}
	host, ports := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return targetRule{}, fmt.Errorf("allow_targets %q: missing ']'", s)
		}
		host, ports = s[1:end], strings.TrimPrefix(s[end+1:], ":")
		if s[end+1:] != "" && !strings.HasPrefix(s[end+1:], ":") {
			return targetRule{}, fmt.Errorf("allow_targets %q: want [address]:port", s)
		}
	} else if strings.Count(s, ":") == 1 {
		host, ports, _ = strings.Cut(s, ":")
	}
	if ports != "" {
		loText, hiText, isRange := strings.Cut(ports, "-")
		lo, err1 := strconv.ParseUint(loText, 10, 16)
		hi, err2 := lo, error(nil)
		if isRange {
			hi, err2 = strconv.ParseUint(hiText, 10, 16)
		}
		if err1 != nil || err2 != nil || lo == 0 || hi < lo {
			return targetRule{}, fmt.Errorf("allow_targets %q: invalid port or port range %q", s, ports)
		}
		r.lo, r.hi = uint16(lo), uint16(hi)
	}
	if p, err := netip.ParsePrefix(host); err == nil {
		r.prefix = p.Masked()
		return r, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return targetRule{}, fmt.Errorf("allow_targets %q: give the address without a zone", s)
		}
		r.prefix = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		return r, nil
	}
	if _, err := tokenresolver.ParseTarget(host + ":1"); err != nil || strings.Contains(host, "/") {
		return targetRule{}, fmt.Errorf("allow_targets %q: not a CIDR, an IP address or a host name", s)
	}
	r.host = strings.ToLower(host)
	return r, nil
}

// targetPolicy is allow_targets: nil allows any target.
type targetPolicy []targetRule

// allowsUnix reports whether a unix socket path lies under a listed
// directory.
func (p targetPolicy) allowsUnix(path string) bool {
	clean := filepath.Clean(path)
	for _, r := range p {
		if r.dir != "" && strings.HasPrefix(clean, r.dir) {
			return true
		}
	}
	return false
}

// allowsAddress reports whether the IP and port being dialed are allowed:
// by an IP range, or by the host name the token named.
func (p targetPolicy) allowsAddress(name string, ap netip.AddrPort) bool {
	ip := ap.Addr().Unmap().WithZone("")
	port := ap.Port()
	for _, r := range p {
		if port < r.lo || port > r.hi {
			continue
		}
		if r.prefix.IsValid() && r.prefix.Contains(ip) {
			return true
		}
		if r.host != "" && strings.EqualFold(r.host, name) {
			return true
		}
	}
	return false
}

type targetNameKey struct{}

// control is the dialer's Control hook: it checks the address actually
// being dialed, after name resolution, so a DNS answer cannot take a
// token's target past allow_targets.
func (p targetPolicy) control(ctx context.Context, network, address string, _ syscall.RawConn) error {
	if !strings.HasPrefix(network, "tcp") {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot check %s", errTargetNotAllowed, network)
	}
	name, _ := ctx.Value(targetNameKey{}).(string)
	if !p.allowsAddress(name, ap) {
		return errTargetNotAllowed
	}
	return nil
}

// checkTarget refuses, before dialing, a unix target outside the listed
// directories; tcp targets are checked as they are dialed. It returns the
// context to dial with.
func (p targetPolicy) checkTarget(ctx context.Context, t tokenresolver.Target) (context.Context, error) {
	if p == nil {
		return ctx, nil
	}
	if t.Network == "unix" {
		if !p.allowsUnix(t.Address) {
			return ctx, errTargetNotAllowed
		}
		return ctx, nil
	}
	host, _, err := net.SplitHostPort(t.Address)
	if err != nil {
		return ctx, errTargetNotAllowed
	}
	return context.WithValue(ctx, targetNameKey{}, host), nil
}

// CheckTargetRule reports whether s is a valid allow_targets entry.
func CheckTargetRule(s string) error {
	_, err := parseTargetRule(s)
	return err
}
