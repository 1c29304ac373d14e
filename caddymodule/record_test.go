package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
	"github.com/vncgate/caddy-vnc-proxy/internal/fbs"
	"github.com/vncgate/caddy-vnc-proxy/internal/recording"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/internal/wsstream"
)

// recordingBrowser is an RFB client through the proxy that keeps every
// byte it received, to compare with the recording.
type recordingBrowser struct {
	t      *testing.T
	stream *wsstream.Stream
	got    bytes.Buffer
	rw     io.ReadWriter
	si     rfb.ServerInit
}

func openRecordingBrowser(t *testing.T, url string) *recordingBrowser {
	t.Helper()
	b := &recordingBrowser{t: t, stream: wsstream.New(mustDialWS(t, url))}
	b.rw = struct {
		io.Reader
		io.Writer
	}{io.TeeReader(b.stream, &b.got), b.stream}
	_ = b.stream.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	si, err := rfb.ClientHandshake(b.rw, "")
	if err != nil {
		t.Fatalf("RFB handshake through the proxy: %v", err)
	}
	b.si = si
	if err := rfb.SetPixelFormat32(b.rw); err != nil {
		t.Fatal(err)
	}
	if err := rfb.SetEncodings(b.rw, rfb.EncodingRaw); err != nil {
		t.Fatal(err)
	}
	return b
}

// frame asks for the whole screen and reads the answer.
func (b *recordingBrowser) frame(incremental bool) []rfb.Rect {
	b.t.Helper()
	_ = b.stream.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := rfb.RequestUpdate(b.rw, incremental, 0, 0, uint16(b.si.Width), uint16(b.si.Height)); err != nil {
		b.t.Fatal(err)
	}
	rects, err := rfb.ReadFramebufferUpdate(b.rw, rfb.PixelFormat32)
	if err != nil {
		b.t.Fatalf("reading a framebuffer update: %v", err)
	}
	return rects
}

// close runs the close handshake and reads until the proxy's answer, so
// that got holds every byte the proxy sent.
func (b *recordingBrowser) close() {
	b.t.Helper()
	ws := b.stream.Conn
	if err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(5*time.Second)); err != nil {
		b.t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, b.rw)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		b.t.Fatalf("the console ended with %v, not a close frame", err)
	}
}

// recordSite is a site body with vnc_proxy, the file resolver and a
// record block.
func recordSite(tokenFile string, record ...string) string {
	return fileSite(tokenFile, recordBlock(record...))
}

// recordBlock is vnc_proxy's record block with these lines.
func recordBlock(lines ...string) string {
	return "record {\n\t\t\t\t" + strings.Join(lines, "\n\t\t\t\t") + "\n\t\t\t}"
}

// waitRecordings waits until dir holds n finished recordings and returns
// their sidecars, oldest first.
func waitRecordings(t *testing.T, dir string, n int) []recording.Sidecar {
	t.Helper()
	var list []recording.Sidecar
	waitFor(t, 10*time.Second, fmt.Sprintf("%d finished recordings in %s", n, dir), func() bool {
		var err error
		list, err = recording.List(dir)
		if err != nil || len(list) != n {
			return false
		}
		for _, s := range list {
			if s.Ended == nil || (!s.Complete && s.Error == "") {
				return false
			}
		}
		return true
	})
	return list
}

// readBlocks reads every block of an FBS file.
func readBlocks(t *testing.T, path string) []fbs.Block {
	t.Helper()
	blocks, err := fbs.ReadFile(path)
	if err != nil {
		t.Fatalf("%s after %d blocks: %v", path, len(blocks), err)
	}
	return blocks
}

// TestRecordedConsole: a console to a real VNC server through Caddy is
// recorded; the recording replays exactly the bytes the browser got, its
// sidecar says whose console it was (without the token), and the input
// file holds the browser's key and pointer events.
func TestRecordedConsole(t *testing.T) {
	vncdemo := func(t *testing.T) string { addr, _ := startVNCDemo(t); return addr }
	servers := []struct {
		name    string
		start   func(t *testing.T) string
		options string
	}{
		{"vncdemo", vncdemo, ""},
		// The server's stream framed by the clipboard filter.
		{"vncdemo with a clipboard policy", vncdemo, "clipboard {\n\t\t\t\tcopy off\n\t\t\t}"},
		{"Xvnc", func(t *testing.T) string { return testenv.StartXvnc(t) }, ""},
		{"QEMU", func(t *testing.T) string { return testenv.StartQEMU(t, testenv.QEMU{}) }, ""},
	}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			addr := srv.start(t)
			dir := t.TempDir()
			recDir := filepath.Join(dir, "recordings")
			tc := startCaddy(t, fileSite(writeTokenFile(t, dir, secretToken+": "+addr),
				recordBlock("dir "+recDir, "include_input on"), srv.options))

			b := openRecordingBrowser(t, tc.url("/websockify?token="+secretToken))
			b.frame(false)
			if err := rfb.PointerEvent(b.rw, 0, 200, 450); err != nil {
				t.Fatal(err)
			}
			if err := rfb.PointerEvent(b.rw, 1, 200, 450); err != nil {
				t.Fatal(err)
			}
			if err := rfb.PointerEvent(b.rw, 0, 200, 450); err != nil {
				t.Fatal(err)
			}
			if err := rfb.KeyEvent(b.rw, true, 'a'); err != nil {
				t.Fatal(err)
			}
			if err := rfb.KeyEvent(b.rw, false, 'a'); err != nil {
				t.Fatal(err)
			}
			b.frame(false)
			b.close()

			side := waitRecordings(t, recDir, 1)[0]
			if !side.Complete || side.Error != "" {
				t.Fatalf("sidecar not complete: %+v", side)
			}
			if side.TokenHash != admission.TokenHash(secretToken) || side.Target != "tcp:"+addr || side.Reason != "browser closed" ||
				!side.InputIncluded || side.Started.IsZero() || side.Ended.Before(side.Started) {
				t.Errorf("sidecar %+v", side)
			}
			if side.Bytes != int64(b.got.Len()) {
				t.Errorf("sidecar says %d bytes, the browser got %d", side.Bytes, b.got.Len())
			}
			if len(side.PixelFormats) != 1 || side.PixelFormats[0].BitsPerPixel != 32 || side.PixelFormats[0].Offset == 0 {
				t.Errorf("pixel formats %+v", side.PixelFormats)
			}
			logs := tc.logs()
			if !strings.Contains(logs, `"session":"`+side.Session+`"`) || !strings.Contains(logs, `"recording":"`+side.ID+`"`) {
				t.Errorf("the log names neither the sidecar's session %q nor the recording %q", side.Session, side.ID)
			}

			// The replay is the browser's stream, byte for byte, in order.
			var replay bytes.Buffer
			var last uint32
			for i, blk := range readBlocks(t, filepath.Join(recDir, side.ID+".fbs")) {
				if blk.Time < last {
					t.Fatalf("block %d at %d ms, after one at %d ms", i, blk.Time, last)
				}
				last = blk.Time
				replay.Write(blk.Data)
			}
			if !bytes.Equal(replay.Bytes(), b.got.Bytes()) {
				t.Fatalf("the recording's %d bytes are not the %d the browser got", replay.Len(), b.got.Len())
			}
			if last != side.DurationMs {
				t.Errorf("last block at %d ms, sidecar duration %d ms", last, side.DurationMs)
			}

			// The input: three pointer events and two key events, as sent.
			var input [][]byte
			for _, blk := range readBlocks(t, filepath.Join(recDir, side.ID+".input")) {
				input = append(input, blk.Data)
			}
			want := [][]byte{
				{rfb.MsgPointerEvent, 0, 0, 200, 1, 194},
				{rfb.MsgPointerEvent, 1, 0, 200, 1, 194},
				{rfb.MsgPointerEvent, 0, 0, 200, 1, 194},
				{rfb.MsgKeyEvent, 1, 0, 0, 0, 0, 0, 'a'},
				{rfb.MsgKeyEvent, 0, 0, 0, 0, 0, 0, 'a'},
			}
			if fmt.Sprint(input) != fmt.Sprint(want) {
				t.Errorf("input blocks %v, want %v", input, want)
			}

			// Files 0600 in a 0700 directory; no token anywhere.
			if info, err := os.Stat(recDir); err != nil || info.Mode().Perm() != 0o700 {
				t.Errorf("recording directory: %v %v", info.Mode(), err)
			}
			for _, ext := range []string{".fbs", ".json", ".input"} {
				path := filepath.Join(recDir, side.ID+ext)
				info, err := os.Stat(path)
				if err != nil || info.Mode().Perm() != 0o600 {
					t.Errorf("%s: %v %v", ext, info.Mode(), err)
				}
				if data, _ := os.ReadFile(path); bytes.Contains(data, []byte(secretToken)) {
					t.Errorf("%s holds the token", ext)
				}
			}
			checkNoSecret(t, tc, secretToken)
		})
	}
}

// TestRecordOptIn: with opt_in on, a console is recorded only when its
// token's record says "record": true; the others are not, and run as
// before (transparent: the browser gets the VNC server's own handshake).
func TestRecordOptIn(t *testing.T) {
	addr, _ := startVNCDemo(t)
	recDir := filepath.Join(t.TempDir(), "recordings")
	route := func(path, url string) string {
		return fmt.Sprintf("route %s {\n\t\tvnc_proxy {\n\t\t\tresolver http %s\n\t\t\trecord %s {\n\t\t\t\topt_in on\n\t\t\t}\n\t\t}\n\t}", path, url, recDir)
	}
	tc := startCaddy(t, route("/yes", recordServer(t, map[string]any{"host": addr, "record": true}))+"\n\t"+
		route("/no", recordServer(t, map[string]any{"host": addr})))

	no := openRecordingBrowser(t, tc.url("/no?token="+secretToken))
	no.frame(false)
	no.close()
	yes := openRecordingBrowser(t, tc.url("/yes?token="+secretToken))
	yes.frame(false)
	yes.close()

	list := waitRecordings(t, recDir, 1)
	if list[0].Bytes != int64(yes.got.Len()) || !list[0].Complete {
		t.Fatalf("the opted-in console's recording: %+v, the browser got %d bytes", list[0], yes.got.Len())
	}
	waitFor(t, 5*time.Second, "both sessions' ends", func() bool { return strings.Count(tc.logs(), `"session ended"`) == 2 })
	time.Sleep(100 * time.Millisecond)
	if list, _ := recording.List(recDir); len(list) != 1 {
		t.Fatalf("%d recordings, want only the opted-in console's", len(list))
	}
	// A console that is not recorded is relayed as it is: vncdemo's own
	// security None without the proxy's 3.8 SecurityResult would look the
	// same, so the logs tell: only the recorded one was RFB-aware.
	if n := strings.Count(tc.logs(), `"vnc_security"`); n != 1 {
		t.Errorf("%d RFB-aware consoles, want 1 (the recorded one)", n)
	}
}

// TestRecordDiskFull: a recording whose disk fills (a file-size limit,
// RLIMIT_FSIZE, in a child process running this test) ends the console
// with 1011 "recording failed" under on_error end, and leaves a sidecar
// that says incomplete; under on_error continue the console goes on, the
// failure is logged once, and the sidecar says incomplete too.
func TestRecordDiskFull(t *testing.T) {
	for _, policy := range []string{"end", "continue"} {
		t.Run(policy, func(t *testing.T) {
			if os.Getenv("RECORD_FSIZE_CHILD") == policy {
				recordDiskFullChild(t, policy)
				return
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestRecordDiskFull$/^"+policy+"$", "-test.v")
			cmd.Env = append(os.Environ(), "RECORD_FSIZE_CHILD="+policy)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "child ok") {
				t.Fatalf("child: %v\n%s", err, out)
			}
			t.Logf("child:\n%s", out)
		})
	}
}

func recordDiskFullChild(t *testing.T, policy string) {
	addr, _ := startVNCDemo(t)
	dir := t.TempDir()
	recDir := filepath.Join(dir, "recordings")
	tc := startCaddy(t, recordSite(writeTokenFile(t, dir, secretToken+": "+addr), "dir "+recDir, "on_error "+policy))
	// The kernel sends SIGXFSZ on a write over the limit; ignored, the
	// write fails with EFBIG instead of killing the process. One full
	// frame of vncdemo in Raw is 1.9 MB; Caddy's logs stay far below.
	signal.Ignore(syscall.SIGXFSZ)
	const limit = 3 << 20
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: limit}); err != nil {
		t.Fatalf("setrlimit: %v", err)
	}

	b := openRecordingBrowser(t, tc.url("/websockify?token="+secretToken))
	b.frame(false)
	if policy == "end" {
		// The second frame does not fit: the console ends, at the latest
		// when the writer finds the disk full.
		_ = b.stream.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_ = rfb.RequestUpdate(b.rw, false, 0, 0, uint16(b.si.Width), uint16(b.si.Height))
		var err error
		for err == nil {
			_ = rfb.RequestUpdate(b.rw, false, 0, 0, uint16(b.si.Width), uint16(b.si.Height))
			_, err = rfb.ReadFramebufferUpdate(b.rw, rfb.PixelFormat32)
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseInternalServerErr || ce.Text != "recording failed" {
			t.Fatalf("the console ended with %v, want close 1011 \"recording failed\"", err)
		}
	} else {
		for range 3 {
			b.frame(false)
		}
		b.close()
	}
	side := waitRecordings(t, recDir, 1)[0]
	if side.Complete || !strings.Contains(side.Error, "file too large") {
		t.Fatalf("sidecar after a full disk: %+v", side)
	}
	// The file holds whole blocks only, and they are what the browser
	// got first.
	var replay bytes.Buffer
	for _, blk := range readBlocks(t, filepath.Join(recDir, side.ID+".fbs")) {
		replay.Write(blk.Data)
	}
	if replay.Len() == 0 || !bytes.HasPrefix(b.got.Bytes(), replay.Bytes()) {
		t.Fatalf("the recording's %d bytes are not the start of the %d the browser got", replay.Len(), b.got.Len())
	}
	waitFor(t, 5*time.Second, "the session's end", func() bool { return strings.Contains(tc.logs(), `"session ended"`) })
	logs := tc.logs()
	if policy == "end" && !strings.Contains(logs, `"reason":"recording failed"`) {
		t.Errorf("the session's end does not say recording failed:\n%s", logs)
	}
	if n := strings.Count(logs, "recording failed, the console goes on unrecorded"); policy == "continue" && n != 1 {
		t.Errorf("the failure was logged %d times, want once", n)
	}
	var m dto.Metric
	if err := recordingFailures.WithLabelValues("srv0").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("caddy_vnc_proxy_recording_failures_total is %v (%v), want 1", m.GetCounter().GetValue(), err)
	}
	fmt.Println("child ok")
}

// TestRecordingsAdminAndRetention runs the real binary with its admin
// endpoint: the list of recordings (a live one incomplete), one served
// whole and in ranges, unknown and malformed ids refused; and retention:
// a console that outlived a reload ends over max_total, and the new
// config's retention deletes the oldest recording within a second of its
// sidecar saying complete.
func TestRecordingsAdminAndRetention(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	addr, _ := startVNCDemo(t)
	dir := t.TempDir()
	recDir := filepath.Join(dir, "recordings")
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	tokens := writeTokenFile(t, dir, secretToken+": "+addr)
	site := func(maxTotal string) string {
		return fmt.Sprintf("vnc_proxy /websockify {\n\t\tresolver file %s\n\t\trecord {\n\t\t\tdir %s\n\t\t\tmax_total %s\n\t\t}\n\t}", tokens, recDir, maxTotal)
	}
	addrSite, proc := startCaddyProcessAdmin(t, dir, admin, site("100MB"))
	url := "ws://" + addrSite + "/websockify?token=" + secretToken
	api := "http://" + admin + "/vnc_proxy/recordings"

	// One Raw frame of vncdemo is 1.92 MB: three are over 4 MB, two are
	// not.
	first := openRecordingBrowser(t, url)
	first.frame(false)
	first.close()
	firstID := waitRecordings(t, recDir, 1)[0].ID
	second := openRecordingBrowser(t, url)
	second.frame(false)
	reloadCaddyProcess(t, caddyProcess{admin: admin}, dir, addrSite, site("4MB"))

	status, body := adminCall(t, http.MethodGet, api, "")
	var list []recording.Sidecar
	if err := json.Unmarshal([]byte(body), &list); status != http.StatusOK || err != nil || len(list) != 2 {
		t.Fatalf("list: %d %v %s", status, err, body)
	}
	if list[0].ID != firstID || !list[0].Complete || list[1].Complete || list[1].Ended != nil {
		t.Fatalf("the list is not the ended recording, then the live one: %s", body)
	}
	if strings.Contains(body, secretToken) {
		t.Fatalf("the list holds the token: %s", body)
	}
	secondID := list[1].ID

	second.frame(false)
	second.close()
	var completed time.Time
	waitFor(t, 10*time.Second, "the second recording complete", func() bool {
		s, err := recording.ReadSidecar(recDir, secondID)
		completed = time.Now()
		return err == nil && s.Complete
	})
	waitFor(t, time.Second, "retention deleting the oldest recording", func() bool {
		_, err := os.Stat(filepath.Join(recDir, firstID+".fbs"))
		return errors.Is(err, os.ErrNotExist)
	})
	t.Logf("the oldest recording was deleted %v after the newest completed", time.Since(completed).Round(time.Millisecond))
	if _, err := os.Stat(filepath.Join(recDir, secondID+".fbs")); err != nil {
		t.Fatalf("retention deleted the newest recording too: %v", err)
	}

	file, err := os.ReadFile(filepath.Join(recDir, secondID+".fbs"))
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, rng string) (int, []byte, http.Header) {
		req, _ := http.NewRequest(http.MethodGet, api+path, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b, resp.Header
	}
	if status, b, h := get("/"+secondID, ""); status != http.StatusOK || !bytes.Equal(b, file) || h.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("GET the recording: %d, %d bytes of %d, %q", status, len(b), len(file), h.Get("Content-Type"))
	}
	if status, b, _ := get("/"+secondID, "bytes=0-11"); status != http.StatusPartialContent || string(b) != fbs.Header {
		t.Fatalf("GET bytes=0-11: %d %q", status, b)
	}
	if status, b, h := get("/"+secondID+".fbs", "bytes=-4"); status != http.StatusPartialContent || !bytes.Equal(b, file[len(file)-4:]) ||
		h.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", len(file)-4, len(file)-1, len(file)) {
		t.Fatalf("GET bytes=-4: %d %x %q", status, b, h.Get("Content-Range"))
	}
	if status, b, _ := get("/"+secondID+".json", ""); status != http.StatusOK || !strings.Contains(string(b), `"complete":true`) {
		t.Fatalf("GET the sidecar: %d %s", status, b)
	}
	for _, bad := range []string{"/" + firstID, "/no-such-recording", "/..%2f..%2fcaddy.log", "/../caddy.log", "/" + secondID + "/x", "/.." + secondID} {
		if status, b, _ := get(bad, ""); status != http.StatusNotFound {
			t.Errorf("GET %s: %d %s, want 404", bad, status, b)
		}
	}
	if status, _ := adminCall(t, http.MethodDelete, api+"/"+secondID, ""); status != http.StatusMethodNotAllowed {
		t.Errorf("DELETE: %d, want 405", status)
	}

	// Caddy stopping ends a recorded console with 1001, and its recording
	// is complete on disk before the process exits.
	third := openRecordingBrowser(t, url)
	third.frame(false)
	proc.Stop()
	// (Retention may have deleted the second recording meanwhile: the
	// three are over 4 MB.)
	list, err = recording.List(recDir)
	if err != nil || len(list) == 0 || list[len(list)-1].ID == secondID {
		t.Fatalf("no recording of the third console after the stop (%v): %+v", err, list)
	}
	if last := list[len(list)-1]; !last.Complete || last.Reason != "server shutting down" || last.Bytes < int64(third.got.Len()) {
		t.Fatalf("the recording of the console Caddy's stop ended: %+v (the browser got %d bytes)", last, third.got.Len())
	}
}

func TestRecordCaddyfileErrors(t *testing.T) {
	cases := []struct {
		name, record, want string
	}{
		{"no dir", "record", "record: dir is required"},
		{"empty block", "record {\n}", "record: dir is required"},
		{"two arguments", "record /a /b", "wrong argument count"},
		{"dir twice", "record /a {\ndir /b\n}", "dir already specified"},
		{"option twice", "record /a {\nopt_in on\nopt_in off\n}", "opt_in already specified"},
		{"unknown option", "record /a {\ncompress on\n}", `unrecognized record option "compress"`},
		{"bad opt_in", "record /a {\nopt_in maybe\n}", "opt_in"},
		{"bad include_input", "record /a {\ninclude_input all\n}", "include_input"},
		{"bad max_age", "record /a {\nmax_age forever\n}", "max_age: invalid duration"},
		{"negative max_age", "record /a {\nmax_age -1h\n}", "negative"},
		{"bad max_total", "record /a {\nmax_total lots\n}", `max_total: invalid size "lots"`},
		{"bad on_error", "record /a {\non_error ignore\n}", `on_error "ignore": want end or continue`},
		{"with protocol serial", "protocol serial\nrecord /a", "record needs protocol vnc, not serial"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var h Handler
			input := "vnc_proxy {\nresolver file /x\n" + c.record + "\n}"
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
			if err == nil {
				t.Fatalf("no error for %q", input)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

// TestRecordedNativeConsole: a native viewer's console on the native
// listener is recorded the same way: the recording replays as a
// security-None console whose stream after ServerInit is what the viewer
// got after its own (VeNCrypt) handshake.
func TestRecordedNativeConsole(t *testing.T) {
	demo, _ := startVNCDemo(t)
	nc := startNativeCaddy(t)
	recDir := filepath.Join(nc.dir, "recordings")
	tokens := writeTokenFile(t, nc.dir, nativeGood+": "+demo)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	nc.load(fmt.Sprintf("vnc_proxy {\n\t\tlisten %s\n\t\tserver_name %s\n\t\tresolver file %s\n\t\trecord %s\n\t}", addr, nativeServerName, tokens, recDir))
	nc.ready(addr)

	c, err := nc.dial(addr, nativeGood)
	if err != nil {
		t.Fatalf("console: %v\n%s", err, nc.logs())
	}
	var got bytes.Buffer
	rw := struct {
		io.Reader
		io.Writer
	}{io.TeeReader(c, &got), c}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := rfb.SetPixelFormat32(rw); err != nil {
		t.Fatal(err)
	}
	if err := rfb.SetEncodings(rw, rfb.EncodingRaw); err != nil {
		t.Fatal(err)
	}
	if err := rfb.RequestUpdate(rw, false, 0, 0, uint16(c.ServerInit.Width), uint16(c.ServerInit.Height)); err != nil {
		t.Fatal(err)
	}
	if _, err := rfb.ReadFramebufferUpdate(rw, rfb.PixelFormat32); err != nil {
		t.Fatal(err)
	}
	c.Close()

	side := waitRecordings(t, recDir, 1)[0]
	if !side.Complete || side.Reason != "browser closed" || side.TokenHash != admission.TokenHash(nativeGood) || len(side.PixelFormats) != 1 {
		t.Fatalf("sidecar %+v", side)
	}
	var replay bytes.Buffer
	for _, blk := range readBlocks(t, filepath.Join(recDir, side.ID+".fbs")) {
		replay.Write(blk.Data)
	}
	si := c.ServerInit
	head := recording.Handshake(recording.ServerInit(si.Width, si.Height, si.PixelFormat, si.Name))
	if !bytes.HasPrefix(replay.Bytes(), head) || !bytes.Equal(replay.Bytes()[len(head):], got.Bytes()) {
		t.Fatalf("the recording (%d bytes) is not the handshake and ServerInit (%d bytes) and the %d bytes the viewer got",
			replay.Len(), len(head), got.Len())
	}
}
