package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ReasonByAdmin is why an administrator's request ended a console, as
// logged and as the close frame's text (1008).
const ReasonByAdmin = "closed by administrator"

// CloseRequest says which consoles an administrator ends: the body of the
// admin API's POST /vnc_proxy/sessions/close and of a Redis revocation
// message. Both fields set: consoles that match both.
type CloseRequest struct {
	TokenHash string `json:"token_hash,omitempty"`
	Target    string `json:"target,omitempty"`
}

// ParseCloseRequest reads a close request; its errors never quote the
// input, which may hold a secret sent by mistake.
func ParseCloseRequest(b []byte) (CloseRequest, error) {
	var req CloseRequest
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return CloseRequest{}, fmt.Errorf("a close request is JSON with token_hash or target (%d bytes that are not)", len(b))
	}
	if dec.More() {
		return CloseRequest{}, errors.New("a close request is one JSON object")
	}
	req.TokenHash = strings.ToLower(strings.TrimSpace(req.TokenHash))
	req.Target = strings.TrimSpace(req.Target)
	if req.TokenHash == "" && req.Target == "" {
		return CloseRequest{}, errors.New("a close request needs token_hash or target")
	}
	if req.Target != "" && !strings.HasPrefix(req.Target, "tcp:") && !strings.HasPrefix(req.Target, "unix:") {
		// A bare host:port is a TCP target, as in token files.
		req.Target = "tcp:" + req.Target
	}
	return req, nil
}

// Matches reports whether the request names s.
func (req CloseRequest) Matches(s *Session) bool {
	return (req.TokenHash == "" || req.TokenHash == s.TokenHash()) &&
		(req.Target == "" || req.Target == s.Target())
}
