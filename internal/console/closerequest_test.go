package console

import (
	"strings"
	"testing"
)

// FuzzParseCloseRequest: a close request from the admin API or a Redis
// message never panics, and what it accepts names consoles by something.
func FuzzParseCloseRequest(f *testing.F) {
	for _, seed := range []string{
		`{"token_hash": "0123456789ab"}`, `{"target": "tcp:10.0.0.5:5901"}`, `{"target": "10.0.0.5:5901"}`,
		`{"token_hash": "a", "target": "unix:/run/vm.sock"}`, `{}`, `[]`, `null`, `{"token": "x"}`, `{"target": 5}`, `{} {}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ParseCloseRequest(b)
		if err != nil {
			if strings.Contains(err.Error(), string(b)) && len(b) > 8 {
				t.Fatalf("the error quotes the input: %v", err)
			}
			return
		}
		if req.TokenHash == "" && req.Target == "" {
			t.Fatal("accepted a request that names no console")
		}
		if req.Target != "" && !strings.HasPrefix(req.Target, "tcp:") && !strings.HasPrefix(req.Target, "unix:") {
			t.Fatalf("target %q has no network", req.Target)
		}
	})
}
