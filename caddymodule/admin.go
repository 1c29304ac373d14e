package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI lists and ends live consoles through Caddy's admin endpoint, for
// every vnc_proxy handler of the running config and the consoles that
// earlier configs started and that survived a reload:
//
//	GET    /vnc_proxy/sessions            the live consoles, as JSON
//	DELETE /vnc_proxy/sessions/<id>       ends one (close 1008 "closed by administrator")
//	POST   /vnc_proxy/sessions/close      {"token_hash": "..."} or {"target": "tcp:host:port"}: ends every match
//
// The admin endpoint's own origin checks and access controls apply. The
// list never contains a token or a VNC password.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.vnc_proxy",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/vnc_proxy/sessions", Handler: caddy.AdminHandlerFunc(a.sessions)},
		{Pattern: "/vnc_proxy/sessions/", Handler: caddy.AdminHandlerFunc(a.session)},
	}
}

// sessionInfo is one console as the admin API lists it.
type sessionInfo struct {
	ID             string     `json:"id"`
	Server         string     `json:"server"`
	Client         string     `json:"client"`
	Target         string     `json:"target"`
	TokenHash      string     `json:"token_hash"`
	Started        time.Time  `json:"started"`
	BytesToBrowser int64      `json:"bytes_to_browser"`
	BytesToTarget  int64      `json:"bytes_to_target"`
	ViewOnly       bool       `json:"view_only"`
	ExpiresAt      *time.Time `json:"expires_at"`
}

func (s *session) info() sessionInfo {
	i := sessionInfo{
		ID:             s.id,
		Server:         s.server,
		Client:         s.client,
		Target:         s.targetAddr.String(),
		TokenHash:      s.tokenHash,
		Started:        s.started.UTC().Truncate(time.Millisecond),
		BytesToBrowser: s.toBrowser.Load(),
		BytesToTarget:  s.toTarget.Load(),
		ViewOnly:       s.filter != nil,
	}
	if !s.targetAddr.ExpiresAt.IsZero() {
		at := s.targetAddr.ExpiresAt.UTC()
		i.ExpiresAt = &at
	}
	return i
}

func sortSessionInfo(list []sessionInfo) {
	slices.SortFunc(list, func(a, b sessionInfo) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// maxCloseBody bounds the body of a close request.
const maxCloseBody = 4 << 10

func (a *AdminAPI) sessions(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	return writeJSON(w, sessions.list())
}

func (a *AdminAPI) session(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, "/vnc_proxy/sessions/")
	switch {
	case rest == "close" && r.Method == http.MethodPost:
		body, err := io.ReadAll(io.LimitReader(r.Body, maxCloseBody+1))
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("reading the request: %w", err)}
		}
		if len(body) > maxCloseBody {
			return caddy.APIError{HTTPStatus: http.StatusRequestEntityTooLarge, Err: errors.New("close request too large")}
		}
		req, err := parseCloseRequest(body)
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
		}
		return writeJSON(w, closed{sessions.closeMatching(req.matches)})
	case rest == "close":
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	case rest == "" || strings.Contains(rest, "/"):
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("no such console")}
	case r.Method != http.MethodDelete:
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	s := sessions.find(rest)
	if s == nil || s.isEnded() {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("no such console")}
	}
	return writeJSON(w, closed{sessions.closeMatching(func(x *session) bool { return x == s })})
}

// closed answers a request that ended consoles.
type closed struct {
	Closed int `json:"closed"`
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

// Interface guards
var _ caddy.AdminRouter = (*AdminAPI)(nil)
