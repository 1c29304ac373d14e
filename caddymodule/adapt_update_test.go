package caddymodule

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// writeAdaptExpectation rewrites an adapt test's expected JSON from what
// the adapter makes of its input now (go test -run TestCaddyfileAdapt
// -update-adapt); review the diff before committing it.
func writeAdaptExpectation(t *testing.T, path, input string) {
	t.Helper()
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, cfg, "", "\t"); err != nil {
		t.Fatal(err)
	}
	content := strings.TrimSpace(input) + "\n----------\n" + out.String() + "\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
