package caddymodule

import (
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"
)

// A secret written literally in the config ends up where the config does:
// Caddy's autosave file (autosave.json in its config directory) and its
// DEBUG "adjusted config" log line. The modules warn at provision, naming
// the option and the placeholder to use, never the value. {env.*} and
// {file.*} are replaced at run time and are not literal; the Caddyfile's
// {$VAR} is (the adapter writes the variable's value into the JSON).

// secretOption is an option that holds a secret, as the config has it.
type secretOption struct {
	// name is the option as a user writes it, e.g. "vnc_auth password".
	name string
	// value is what the config holds for it.
	value string
	// env is a variable name to suggest, e.g. VNC_PASSWORD.
	env string
}

// warnLiteralSecrets warns about each option whose value is literal.
func warnLiteralSecrets(logger *zap.Logger, opts []secretOption) {
	for _, o := range opts {
		if !isLiteralSecret(o.value) {
			continue
		}
		logger.Warn("a secret is written literally in the config, which Caddy saves to its autosave file and logs at DEBUG level",
			zap.String("option", o.name),
			zap.String("use", "{env."+o.env+"} or {file./path/to/secret}"))
	}
}

// isLiteralSecret reports whether v holds a secret as is: not empty, and
// not taken from the environment or a file at run time.
func isLiteralSecret(v string) bool {
	return v != "" && !strings.Contains(v, "{env.") && !strings.Contains(v, "{file.")
}

// credentialHeader reports whether an HTTP callback header carries a
// credential: Authorization and Cookie, and names with key, token, secret,
// auth or password in them. Other headers (Accept, X-Request-Source) are
// not secrets.
func credentialHeader(name string) bool {
	n := strings.ToLower(name)
	switch http.CanonicalHeaderKey(name) {
	case "Authorization", "Proxy-Authorization", "Cookie":
		return true
	}
	for _, word := range []string{"key", "token", "secret", "auth", "password"} {
		if strings.Contains(n, word) {
			return true
		}
	}
	return false
}

// urlPassword is the password in a URL such as redis://user:pw@host, or "".
func urlPassword(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return ""
	}
	pw, _ := u.User.Password()
	return pw
}
