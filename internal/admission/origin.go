package admission

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// originAllowed reports whether the page that opened the console may use
// consoles here. A request without an Origin is not from a browser.
func (p *Pipeline) originAllowed(origin, self string) bool {
	if origin == "" || p.anyOrigin {
		return true
	}
	norm, err := NormalizeOrigin(origin)
	if err != nil {
		return false
	}
	if len(p.allowedOrigins) == 0 {
		selfNorm, err := NormalizeOrigin(self)
		return err == nil && norm == selfNorm
	}
	return p.allowedOrigins[norm]
}

// NormalizeOrigin returns scheme://host[:port] in lower case, without a
// default port.
func NormalizeOrigin(origin string) (string, error) {
	u, err := url.Parse(origin)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("origin %q is not scheme://host[:port]", origin)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return "", fmt.Errorf("origin %q has more than scheme://host[:port]", origin)
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host, nil
}
