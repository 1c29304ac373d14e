package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// TestClipboardPerToken: a Redis record's "clipboard" narrows the
// handler's policy, never widens it; a console with a policy other than
// the default is RFB-aware and framed (its picture still comes through),
// one with the default stays transparent.
func TestClipboardPerToken(t *testing.T) {
	addr, _ := startVNCDemo(t)
	rs := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	for _, c := range []struct {
		site, grant, want string
	}{
		{"", "", ""},
		{"", "both", ""},
		{"", "copy", "copy on, paste off, max 1048576"},
		{"paste off", "both", "copy on, paste off, max 1048576"},
		{"paste off", "paste", "copy off, paste off, max 1048576"},
		{"max_size 4KiB", "none", "copy off, paste off, max 4096"},
	} {
		t.Run(c.site+" "+c.grant, func(t *testing.T) {
			record := map[string]any{"host": addr}
			if c.grant != "" {
				record["clipboard"] = c.grant
			}
			b, _ := json.Marshal(record)
			token := "clip-" + strings.ReplaceAll(c.site+c.grant, " ", "") + secretToken
			if err := rdb.Set(context.Background(), token, b, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			block := ""
			if c.site != "" {
				block = "clipboard {\n\t\t\t\t" + c.site + "\n\t\t\t}"
			}
			tc := startCaddy(t, fmt.Sprintf("route /websockify {\n\t\tvnc_proxy {\n\t\t\tresolver redis %s\n\t\t\t%s\n\t\t}\n\t}", rs.Addr, block))
			stream, si := rfbThroughProxy(t, tc.url("/websockify?token="+token))
			if rects := firstFrame(t, stream, si); len(rects) == 0 {
				t.Fatal("empty first framebuffer update")
			}
			stream.Conn.Close()
			waitFor(t, 5*time.Second, "the session's end", func() bool { return strings.Contains(tc.logs(), `"session ended"`) })
			logs := tc.logs()
			if c.want == "" {
				if strings.Contains(logs, `"clipboard"`) || strings.Contains(logs, "vnc_security") {
					t.Errorf("a console with the default policy is not transparent:\n%s", logs)
				}
				return
			}
			if !strings.Contains(logs, `"clipboard":"`+c.want+`"`) || !strings.Contains(logs, `"clipboard_dropped":0`) {
				t.Errorf("the session's lines do not say clipboard %q and clipboard_dropped:\n%s", c.want, logs)
			}
			checkNoSecret(t, tc, secretToken)
		})
	}
}
