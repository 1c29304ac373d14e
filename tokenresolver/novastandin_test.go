package tokenresolver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// novaStandIn plays Keystone v3 (POST /v3/auth/tokens) and nova's compute
// API (GET /v2.1/os-console-auth-tokens/{token}) as their API references
// describe them: the token in X-Subject-Token with its expires_at in the
// body; 401 for a missing, expired or revoked Keystone token; 404 for an
// unknown console token; the console as {"console": {...}} for
// microversion 2.31 or later, in one shape for every console type (novnc,
// spice-html5, serial: the answer does not name the type).
type novaStandIn struct {
	mu       sync.Mutex
	logins   int
	tokens   map[string]time.Time // Keystone token -> expiry
	tokenTTL time.Duration
	consoles map[string]string // console token -> the "console" object
	// What it expects as credentials: an application credential's id and
	// secret, or a user, its password and a project.
	appCredID, appCredSecret string
	user, password, project  string
	lookups                  int
	failKeystone             bool
}

func newNovaStandIn() *novaStandIn {
	return &novaStandIn{
		tokens:        make(map[string]time.Time),
		tokenTTL:      time.Hour,
		consoles:      make(map[string]string),
		appCredID:     "ac-1234",
		appCredSecret: "ac-secret-5678",
		user:          "vnc-proxy",
		password:      "pw-9abc",
		project:       "service",
	}
}

func (s *novaStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v3/auth/tokens":
		s.logins++
		if s.failKeystone {
			http.Error(w, `{"error": {"code": 503}}`, http.StatusServiceUnavailable)
			return
		}
		var req keystoneLogin
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, `{"error": {"code": 400}}`, http.StatusBadRequest)
			return
		}
		id := req.Auth.Identity
		ok := false
		switch {
		case len(id.Methods) == 1 && id.Methods[0] == "application_credential" && id.ApplicationCredential != nil:
			ok = id.ApplicationCredential.ID == s.appCredID && id.ApplicationCredential.Secret == s.appCredSecret
		case len(id.Methods) == 1 && id.Methods[0] == "password" && id.Password != nil && req.Auth.Scope != nil:
			u := id.Password.User
			p := req.Auth.Scope.Project
			ok = u.Name == s.user && u.Password == s.password && u.Domain.Name == "Default" &&
				p.Name == s.project && p.Domain.Name == "Default"
		}
		if !ok {
			http.Error(w, `{"error": {"code": 401, "title": "Unauthorized"}}`, http.StatusUnauthorized)
			return
		}
		token := fmt.Sprintf("gAAAAAB-keystone-%d", s.logins)
		expires := time.Now().Add(s.tokenTTL).UTC()
		s.tokens[token] = expires
		w.Header().Set("X-Subject-Token", token)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"token": {"methods": %q, "expires_at": %q, "issued_at": %q}}`,
			id.Methods, expires.Format("2006-01-02T15:04:05.000000Z"), time.Now().UTC().Format(time.RFC3339))

	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v2.1/os-console-auth-tokens/"):
		exp, ok := s.tokens[r.Header.Get("X-Auth-Token")]
		if !ok || time.Now().After(exp) {
			http.Error(w, `{"error": {"message": "The request you have made requires authentication.", "code": 401}}`, http.StatusUnauthorized)
			return
		}
		if r.Header.Get("OpenStack-API-Version") != "compute 2.31" {
			http.Error(w, `{"badRequest": {"message": "unsupported console type", "code": 400}}`, http.StatusBadRequest)
			return
		}
		s.lookups++
		console, ok := s.consoles[strings.TrimPrefix(r.URL.Path, "/v2.1/os-console-auth-tokens/")]
		if !ok {
			http.Error(w, `{"itemNotFound": {"message": "The token is invalid or has expired", "code": 404}}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"console": %s}`, console)

	default:
		http.NotFound(w, r)
	}
}

// revokeAll makes every Keystone token invalid, as an expiry or a
// revocation would.
func (s *novaStandIn) revokeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = make(map[string]time.Time)
}

func (s *novaStandIn) addConsole(token, console string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.consoles[token] = console
}

func (s *novaStandIn) counts() (logins, lookups int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins, s.lookups
}
