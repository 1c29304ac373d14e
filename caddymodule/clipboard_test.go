package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
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

// TestClipboardNativeListener: the native listener takes the same
// clipboard block: a viewer's ClientCutText is dropped with paste off,
// while its pictures come through the framed relay.
func TestClipboardNativeListener(t *testing.T) {
	demo, _ := startVNCDemo(t)
	nc := startNativeCaddy(t)
	tokens := writeTokenFile(t, nc.dir, nativeGood+": "+demo)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	nc.load(fmt.Sprintf("vnc_proxy {\n\t\tlisten %s\n\t\tserver_name %s\n\t\tresolver file %s\n\t\tclipboard {\n\t\t\tpaste off\n\t\t}\n\t}\n\t",
		addr, nativeServerName, tokens))
	nc.ready(addr)
	v, err := nc.dial(addr, nativeGood)
	if err != nil {
		t.Fatalf("console: %v\n%s", err, nc.logs())
	}
	if err := rfb.ClientCutText(v, []byte("pasted")); err != nil {
		t.Fatal(err)
	}
	expectUpdate(t, v)
	var info console.Info
	for _, i := range nc.adminSessions() {
		if i.Server == "native/"+addr {
			info = i
		}
	}
	// ClientInit and the update request; the clipboard was dropped.
	if info.BytesToTarget != 1+10 {
		t.Fatalf("console listed as %+v, want 11 bytes to the VNC server", info)
	}
	v.Close()
	waitFor(t, 5*time.Second, "the session's end", func() bool { return strings.Contains(nc.logs(), `"session ended"`) })
	if logs := nc.logs(); !strings.Contains(logs, `"clipboard_dropped":1`) || strings.Contains(logs, "pasted") {
		t.Errorf("the session's end does not count the dropped clipboard:\n%s", logs)
	}
}
