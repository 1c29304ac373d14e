package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
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
//	GET    /vnc_proxy/recordings          the recordings of every configured record dir: their sidecars, as JSON
//	GET    /vnc_proxy/recordings/<id>     one recording's FBS file (Range requests answered); <id>.json: its sidecar
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
		{Pattern: "/vnc_proxy/recordings", Handler: caddy.AdminHandlerFunc(a.recordings)},
		{Pattern: "/vnc_proxy/recordings/", Handler: caddy.AdminHandlerFunc(a.recording)},
	}
}

// maxCloseBody bounds the body of a close request.
const maxCloseBody = 4 << 10

func (a *AdminAPI) sessions(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	return writeJSON(w, console.Sessions.List())
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
		req, err := console.ParseCloseRequest(body)
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
		}
		return writeJSON(w, closed{console.Sessions.EndMatching(req.Matches, console.ReasonByAdmin)})
	case rest == "close":
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	case rest == "" || strings.Contains(rest, "/"):
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("no such console")}
	case r.Method != http.MethodDelete:
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	s := console.Sessions.Find(rest)
	if s == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("no such console")}
	}
	return writeJSON(w, closed{console.Sessions.EndMatching(func(x *console.Session) bool { return x == s }, console.ReasonByAdmin)})
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
