package caddymodule

import (
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
	"github.com/vncgate/caddy-vnc-proxy/internal/recording"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
)

// BenchmarkRecordedRelayToBrowser: BenchmarkRelayToBrowser's 64 KiB per op
// from the VNC server to the browser, through a transparent console (the
// splice relay), an RFB-aware one (the proxy logs in, then splices too),
// the same through the copy relay a recorded console has, and a recorded
// one (RFB-aware, every chunk queued for the recording and written to a
// file in a temporary directory):
//
//	go test -run '^$' -bench RecordedRelayToBrowser ./caddymodule/
func BenchmarkRecordedRelayToBrowser(b *testing.B) {
	variants := []struct {
		name      string
		configure func(t *testing.B, h *Handler)
	}{
		{"transparent", nil},
		{"rfb-aware", func(_ *testing.B, h *Handler) { h.VNCAuth = &VNCAuth{} }},
		{"rfb-aware-copy", func(b *testing.B, h *Handler) {
			// The copy relay a recorded console has (no splice), without
			// the recording.
			console.CopyRelayOnly.Store(true)
			b.Cleanup(func() { console.CopyRelayOnly.Store(false) })
			h.VNCAuth = &VNCAuth{}
		}},
		{"recorded", func(b *testing.B, h *Handler) {
			h.Record = &RecordOptions{Dir: filepath.Join(b.TempDir(), "recordings")}
		}},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			var recordingsDir string
			url := benchProxyWith(b, func(h *Handler) {
				if v.configure != nil {
					v.configure(b, h)
				}
				if h.Record != nil {
					recordingsDir = h.Record.Dir
				}
			})
			const chunk = 64 << 10
			b.SetBytes(chunk)
			b.ReportAllocs()
			ws, _, err := benchDialer.Dial(url, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer ws.Close()
			if v.configure != nil {
				benchAwareHandshake(b, ws)
			} else if _, greeting, err := ws.ReadMessage(); err != nil || string(greeting) != loadtarget.Greeting {
				b.Fatalf("greeting %q, %v", greeting, err)
			}
			n := int64(b.N) * chunk
			b.ResetTimer()
			if err := ws.WriteMessage(websocket.BinaryMessage, sizedCmd('s', n)); err != nil {
				b.Fatal(err)
			}
			readBytes(b, ws, n)
			b.StopTimer()
			ws.Close()
			if dir := recordingsDir; dir != "" {
				// The recording finishes before its directory goes.
				waitFor(b, 10*time.Second, "the recording's end", func() bool {
					list, err := recording.List(dir)
					return err == nil && len(list) > 0 && list[len(list)-1].Ended != nil
				})
			}
		})
	}
}

// benchAwareHandshake is the browser's side of an RFB-aware console's
// handshake with loadtarget behind it, which sends no ServerInit: the
// proxy's version, security None and SecurityResult, then ClientInit.
func benchAwareHandshake(b *testing.B, ws *websocket.Conn) {
	b.Helper()
	s := wsstream.New(ws)
	want := recording.Handshake(nil)
	got := make([]byte, len(want))
	step := func(read int, answer []byte) {
		if _, err := io.ReadFull(s, got[:read]); err != nil {
			b.Fatalf("the proxy's handshake: %v", err)
		}
		got = got[read:]
		if _, err := s.Write(answer); err != nil {
			b.Fatal(err)
		}
	}
	step(12, []byte(loadtarget.Greeting))
	step(2, []byte{1})
	step(4, []byte{1})
}
