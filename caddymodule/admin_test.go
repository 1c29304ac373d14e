package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// adminCall sends a request to Caddy's admin endpoint and returns the
// status and body.
func adminCall(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(url, "/load") {
		req.Header.Set("Content-Type", "text/caddyfile")
	} else if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// liveConsole opens an echoing console to a loadtarget and checks it
// works.
func liveConsole(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ws := mustDialWS(t, url)
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := ws.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte{'e'}); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return ws
}

// expectAdminClose checks that the console ends with 1008 "closed by
// administrator" within a second.
func expectAdminClose(t *testing.T, ws *websocket.Conn) {
	t.Helper()
	code, text := closeText(t, ws, time.Second)
	if code != websocket.ClosePolicyViolation || text != console.ReasonByAdmin {
		t.Fatalf("closed with %d %q, want 1008 %q", code, text, console.ReasonByAdmin)
	}
}

// stillOpen checks that an echoing console still answers.
func stillOpen(t *testing.T, ws *websocket.Conn) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("?")); err != nil {
		t.Fatalf("the console was closed: %v", err)
	}
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "?" {
		t.Fatalf("the console was closed: %q, %v", msg, err)
	}
}

// TestAdminAPI runs the real binary with its admin endpoint: the list of
// live consoles (without a token), ending one by id, by token hash and by
// target, and the errors, in Caddy's admin format.
func TestAdminAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	addrA, _ := startLoadTarget(t)
	addrB, _ := startLoadTarget(t)
	dir := t.TempDir()
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	tokens := writeTokenFile(t, dir, "a-"+secretToken+": "+addrA, "b-"+secretToken+": "+addrB, "b2-"+secretToken+": "+addrB)
	site, _ := startCaddyProcessAdmin(t, dir, admin, fmt.Sprintf("vnc_proxy /websockify {\n\t\tresolver file %s\n\t}", tokens))
	api := "http://" + admin + "/vnc_proxy/sessions"
	open := func(tok string) *websocket.Conn {
		return liveConsole(t, "ws://"+site+"/websockify?token="+tok+"-"+secretToken)
	}
	a, b, b2 := open("a"), open("b"), open("b2")

	// The consoles of a config before a reload are listed and ended too.
	reloadCaddyProcess(t, caddyProcess{admin: admin}, dir, site, fmt.Sprintf("vnc_proxy /websockify {\n\t\tresolver file %s\n\t\tdial_timeout 3s\n\t}", tokens))

	status, body := adminCall(t, http.MethodGet, api, "")
	if status != http.StatusOK {
		t.Fatalf("list: %d %s", status, body)
	}
	if strings.Contains(body, secretToken) {
		t.Fatalf("the list holds a token: %s", body)
	}
	var list []console.Info
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != 3 {
		t.Fatalf("list of %d (%v): %s", len(list), err, body)
	}
	var idA string
	for _, s := range list {
		if s.ID == "" || s.Client == "" || s.Started.IsZero() || s.Server == "" || s.ExpiresAt != nil {
			t.Errorf("incomplete entry %+v", s)
		}
		if s.TokenHash == admission.TokenHash("a-"+secretToken) {
			idA = s.ID
			if s.Target != "tcp:"+addrA {
				t.Errorf("target %q, want tcp:%s", s.Target, addrA)
			}
		}
	}
	for _, field := range []string{`"bytes_to_browser"`, `"bytes_to_target"`, `"view_only"`, `"expires_at"`} {
		if !strings.Contains(body, field) {
			t.Errorf("the list has no %s: %s", field, body)
		}
	}

	if status, body := adminCall(t, http.MethodDelete, api+"/"+idA, ""); status != http.StatusOK || !strings.Contains(body, `"closed":1`) {
		t.Fatalf("DELETE by id: %d %s", status, body)
	}
	expectAdminClose(t, a)
	stillOpen(t, b)

	status, body = adminCall(t, http.MethodDelete, api+"/"+idA, "")
	if status != http.StatusNotFound || !strings.Contains(body, `"error"`) {
		t.Fatalf("DELETE of an ended console: %d %s, want 404 with an error", status, body)
	}
	if status, _ := adminCall(t, http.MethodDelete, api+"/no-such-console", ""); status != http.StatusNotFound {
		t.Fatalf("DELETE of an unknown id: %d, want 404", status)
	}
	for _, bad := range []string{`{}`, `not json`, `{"token": "` + secretToken + `"}`} {
		status, body := adminCall(t, http.MethodPost, api+"/close", bad)
		if status != http.StatusBadRequest || strings.Contains(body, secretToken) {
			t.Errorf("close with %q: %d %s, want 400 without the input", bad, status, body)
		}
	}

	status, body = adminCall(t, http.MethodPost, api+"/close", `{"token_hash": "`+admission.TokenHash("b-"+secretToken)+`"}`)
	if status != http.StatusOK || !strings.Contains(body, `"closed":1`) {
		t.Fatalf("close by token hash: %d %s", status, body)
	}
	expectAdminClose(t, b)
	stillOpen(t, b2)

	status, body = adminCall(t, http.MethodPost, api+"/close", `{"target": "tcp:`+addrB+`"}`)
	if status != http.StatusOK || !strings.Contains(body, `"closed":1`) {
		t.Fatalf("close by target: %d %s", status, body)
	}
	expectAdminClose(t, b2)

	waitFor(t, 5*time.Second, "an empty list", func() bool {
		_, body := adminCall(t, http.MethodGet, api, "")
		return strings.TrimSpace(body) == "[]"
	})
	waitFor(t, 5*time.Second, "session ended lines with the administrator's reason", func() bool {
		return strings.Count(readFile(t, dir+"/caddy.log"), `"reason":"closed by administrator"`) == 3
	})
	if logs := readFile(t, dir+"/caddy.log"); strings.Contains(logs, secretToken) {
		t.Errorf("the log holds the token:\n%s", logs)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRevocationsAcrossNodes runs two Caddy processes on one Redis with
// revocations: one PUBLISH ends the matching consoles on both within a
// second and leaves the others; after Redis restarts, both subscribe again
// by themselves and the next PUBLISH works too.
func TestRevocationsAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	addr, _ := startLoadTarget(t)
	other, _ := startLoadTarget(t)
	rs := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	ctx := context.Background()
	setTokens := func() {
		t.Helper()
		for tok, target := range map[string]string{"vm-" + secretToken: addr, "other-" + secretToken: other} {
			if err := rdb.Set(ctx, tok, target, time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	setTokens()
	const channel = "vnc-revocations"
	body := fmt.Sprintf("vnc_proxy /websockify {\n\t\tresolver redis %s {\n\t\t\trevocations %s\n\t\t}\n\t}", rs.Addr, channel)
	var sites []string
	for range 2 {
		site, _ := startCaddyProcess(t, t.TempDir(), body)
		sites = append(sites, site)
	}
	subscribed := func() {
		t.Helper()
		waitFor(t, 15*time.Second, "both nodes to subscribe", func() bool {
			n, err := rdb.PubSubNumSub(ctx, channel).Result()
			return err == nil && n[channel] == 2
		})
	}
	revoke := func(msg string) {
		t.Helper()
		var consoles, others []*websocket.Conn
		for _, site := range sites {
			consoles = append(consoles, liveConsole(t, "ws://"+site+"/websockify?token=vm-"+secretToken))
			others = append(others, liveConsole(t, "ws://"+site+"/websockify?token=other-"+secretToken))
		}
		if err := rdb.Publish(ctx, channel, msg).Err(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, ws := range consoles {
			wg.Go(func() { expectAdminClose(t, ws) })
		}
		wg.Wait()
		for _, ws := range others {
			stillOpen(t, ws)
		}
	}

	subscribed()
	revoke(`{"token_hash": "` + admission.TokenHash("vm-"+secretToken) + `"}`)

	rs.Restart()
	setTokens()
	subscribed()
	// A control plane that deleted the VM names its console's address.
	revoke(`{"target": "` + addr + `"}`)
}
