package tokenresolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

// websockifyTokens is what testdata/websockify-tokens holds.
var websockifyTokens = map[string]Target{
	"vm1":                      {Network: "tcp", Address: "10.0.0.5:5900"},
	"vm2":                      {Network: "tcp", Address: "192.168.1.20:5901"},
	"vm3":                      {Network: "tcp", Address: "vnc.example.com:5902"},
	"v6-bracket":               {Network: "tcp", Address: "[::1]:5903"},
	"v6-bare":                  {Network: "tcp", Address: "[fe80::1]:5904"},
	"v6-long":                  {Network: "tcp", Address: "[2001:db8::17]:5905"},
	"v6-zone":                  {Network: "tcp", Address: "[fe80::2%eth0]:5906"},
	"sock":                     {Network: "unix", Address: "/run/vnc/vm4.sock"},
	"dup":                      {Network: "tcp", Address: "10.0.0.2:5907"},
	"Ab0-_.~+=/":               {Network: "tcp", Address: "host_1.internal:5908"},
	"tok:with:colons":          {Network: "tcp", Address: "10.0.0.9:5909"},
	"extra-space":              {Network: "tcp", Address: "10.0.0.11:5910"},
	"port-max":                 {Network: "tcp", Address: "10.0.0.12:65535"},
	"port-min":                 {Network: "tcp", Address: "10.0.0.13:1"},
	"c3VwZXItc2VjcmV0LXRva2Vu": {Network: "tcp", Address: "localhost:5911"},
}

func resolve(t *testing.T, r Resolver, token string) (Target, error) {
	t.Helper()
	return r.Resolve(context.Background(), Query{Token: token, ClientAddr: "127.0.0.1:1234"})
}

func checkTable(t *testing.T, f *File, want map[string]Target) {
	t.Helper()
	if f.Len() != len(want) {
		t.Errorf("%d tokens, want %d", f.Len(), len(want))
	}
	for token, w := range want {
		got, err := resolve(t, f, token)
		if err != nil || got != w {
			t.Errorf("Resolve(%q) = %+v, %v; want %+v", token, got, err, w)
		}
	}
}

func openFile(t *testing.T, path string, opts FileOptions) *File {
	t.Helper()
	f, err := OpenFile(path, opts)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes content to path atomically, as most editors and
// configuration tools do: a new file renamed over the old one.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestFileWebsockifyForms(t *testing.T) {
	f := openFile(t, "testdata/websockify-tokens", FileOptions{})
	checkTable(t, f, websockifyTokens)
	for _, token := range []string{"", "vm", "VM1", "vm1 ", "# websockify token file", "spaced"} {
		if got, err := resolve(t, f, token); !errors.Is(err, ErrNotFound) {
			t.Errorf("Resolve(%q) = %+v, %v; want ErrNotFound", token, got, err)
		}
	}
}

func TestFileFormat(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    map[string]Target
	}{
		{"empty", "", map[string]Target{}},
		{"only comments", "# a\n  # b\n\n\t\n", map[string]Target{}},
		{"no final newline", "a: h:1", map[string]Target{"a": {Network: "tcp", Address: "h:1"}}},
		{"CRLF", "# c\r\na: h:1\r\n\r\nb: h:2\r\n", map[string]Target{
			"a": {Network: "tcp", Address: "h:1"}, "b": {Network: "tcp", Address: "h:2"}}},
		{"CR only", "a: h:1\rb: h:2\r", map[string]Target{
			"a": {Network: "tcp", Address: "h:1"}, "b": {Network: "tcp", Address: "h:2"}}},
		{"trailing spaces and tabs", "a: h:1 \t \nb:\th:2\t\n", map[string]Target{
			"a": {Network: "tcp", Address: "h:1"}, "b": {Network: "tcp", Address: "h:2"}}},
		{"space before colon stays in the token", "a : h:1\n", map[string]Target{
			"a ": {Network: "tcp", Address: "h:1"}}},
		{"unicode space separator", "a:\u00a0h:1\n", map[string]Target{"a": {Network: "tcp", Address: "h:1"}}},
		{"byte order mark", "\uFEFFa: h:1\n", map[string]Target{"a": {Network: "tcp", Address: "h:1"}}},
		{"last duplicate wins", "a: h:1\na: h:2\n", map[string]Target{"a": {Network: "tcp", Address: "h:2"}}},
		{"unix forms", "a: unix_socket:/s\nb: unix:/t\n", map[string]Target{
			"a": {Network: "unix", Address: "/s"}, "b": {Network: "unix", Address: "/t"}}},
		{"hash inside a token", "a#b: h:1\n", map[string]Target{"a#b": {Network: "tcp", Address: "h:1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vnc-tokens")
			writeFile(t, path, tt.content)
			checkTable(t, openFile(t, path, FileOptions{}), tt.want)
		})
	}
}

func TestFileMalformed(t *testing.T) {
	const secret = "s3cr3t-t0ken"
	tests := []struct {
		name    string
		content string
		line    int
		wantErr string
	}{
		{"no colon", "ok: h:1\n" + secret + " h:1\n", 2, `missing ": " between token and target`},
		{"no space after colon", "# c\n\n" + secret + ":h:1\n", 3, `missing ": " between token and target`},
		{"nothing after colon", secret + ":   \n", 1, `missing ": " between token and target`},
		{"two separators", secret + ": h: 1\n", 1, `more than one ": "`},
		{"empty token", ": h:1\n", 1, "empty token"},
		{"bad port", secret + ": h:99999\n", 1, `invalid port "99999"`},
		{"no port", "a: h:1\r\n" + secret + ": h\r\n", 2, `invalid target "h": missing ':<port>'`},
		{"inline comment", secret + ": h:1 # vm1\n", 1, `invalid port "1 # vm1"`},
		{"line numbers count CR lines", "a: h:1\rb: h:2\r" + secret + ": x\r", 3, "invalid target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vnc-tokens")
			// A good line after the bad one: only the bad one is lost.
			writeFile(t, path, tt.content+"after: h:7\n")
			f := openFile(t, path, FileOptions{})
			sk := f.Skipped()
			if sk.Lines != 1 || len(sk.First) != 1 {
				t.Fatalf("skipped %+v, want the one bad line", sk)
			}
			err := sk.First[0]
			prefix := fmt.Sprintf("%s:%d: ", path, tt.line)
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want %q...%q", err, prefix, tt.wantErr)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q contains the token", err)
			}
			if err.File != path || err.Line != tt.line {
				t.Errorf("error %#v, want %s:%d", err, path, tt.line)
			}
			if got, rerr := f.Resolve(context.Background(), Query{Token: "after"}); rerr != nil || got.Address != "h:7" {
				t.Errorf("the good line after the bad one: %+v, %v", got, rerr)
			}
			if _, rerr := f.Resolve(context.Background(), Query{Token: secret}); !errors.Is(rerr, ErrNotFound) {
				t.Errorf("the bad line's token: %v, want ErrNotFound", rerr)
			}
		})
	}
}

// TestFileSkippedBounded: a file that is no token file at all (a log, say)
// costs a count and a few examples, not an error per line.
func TestFileSkippedBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vnc-tokens")
	writeFile(t, path, strings.Repeat("this is not a token line\n", 10000)+"ok: h:1\n")
	sk := openFile(t, path, FileOptions{}).Skipped()
	if sk.Lines != 10000 || len(sk.First) != maxSkippedShown {
		t.Errorf("skipped %d lines, %d shown; want 10000 and %d", sk.Lines, len(sk.First), maxSkippedShown)
	}
}

func TestFileOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenFile("", FileOptions{}); err == nil {
		t.Error("OpenFile with no path succeeded")
	}
	if _, err := OpenFile(filepath.Join(dir, "missing"), FileOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenFile of a missing file: %v, want os.ErrNotExist", err)
	}
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := OpenFile(sock, FileOptions{}); err == nil || !strings.Contains(err.Error(), "not a regular file or directory") {
		t.Errorf("OpenFile of a socket: %v", err)
	}
}

func TestFileDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a"), "a1: h:1\nshared: h:10\n")
	writeFile(t, filepath.Join(dir, "b.conf"), "b1: h:2\nshared: h:20\n")
	writeFile(t, filepath.Join(dir, ".hidden"), "hidden: h:3\n")
	writeFile(t, filepath.Join(dir, "b.conf~"), "backup: h:4\n")
	writeFile(t, filepath.Join(dir, ".b.conf.swp"), "not a token file at all")
	writeFile(t, filepath.Join(dir, "#b.conf#"), "autosave: h:5\n")
	writeFile(t, filepath.Join(dir, "x.tmp"), "tmp: h:6\n")
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sub", "c"), "sub: h:7\n")
	other := filepath.Join(t.TempDir(), "elsewhere")
	writeFile(t, other, "linked: h:8\n")
	if err := os.Symlink(other, filepath.Join(dir, "c-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "gone"), filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}

	writeFile(t, filepath.Join(dir, "..data"), "kubernetes: h:9\n")
	writeFile(t, filepath.Join(dir, "caddy.log"), `{"level":"info","msg":"a log is no token file"}`+"\n")
	writeFile(t, filepath.Join(dir, "a.dpkg-old"), "old: h:9\n")

	f := openFile(t, dir, FileOptions{})
	checkTable(t, f, map[string]Target{
		"a1":     {Network: "tcp", Address: "h:1"},
		"b1":     {Network: "tcp", Address: "h:2"},
		"shared": {Network: "tcp", Address: "h:20"}, // b.conf comes after a
		"linked": {Network: "tcp", Address: "h:8"},
		"hidden": {Network: "tcp", Address: "h:3"}, // websockify reads dot files too
	})
	if sk := f.Skipped(); sk.Lines != 0 {
		t.Errorf("skipped %+v", sk)
	}

	writeFile(t, filepath.Join(dir, "d"), "ok: h:1\n\nsecret-token h:1\n")
	sk := openFile(t, dir, FileOptions{}).Skipped()
	if want := filepath.Join(dir, "d") + ":3: "; sk.Lines != 1 || !strings.HasPrefix(sk.First[0].Error(), want) {
		t.Errorf("a directory with a bad line: skipped %+v, want %q...", sk, want)
	}
}

// reloadRecorder collects a File's reload and error reports.
type reloadRecorder struct {
	reloads chan int
	errs    chan error
}

func newRecorder() *reloadRecorder {
	return &reloadRecorder{reloads: make(chan int, 100), errs: make(chan error, 100)}
}

func (r *reloadRecorder) options() FileOptions {
	return FileOptions{
		OnReload: func(n int, _ Skipped) { r.reloads <- n },
		OnError:  func(err error) { r.errs <- err },
		Debounce: 20 * time.Millisecond,
	}
}

// waitReload waits for a reload with want tokens; an in-place write may
// first be seen half done, so other counts before it are tolerated.
func (r *reloadRecorder) waitReload(t *testing.T, want int) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case n := <-r.reloads:
			if n == want {
				return
			}
			t.Logf("reloaded with %d tokens, waiting for %d", n, want)
		case err := <-r.errs:
			t.Fatalf("reload failed: %v", err)
		case <-timeout:
			t.Fatalf("no reload with %d tokens within 5s", want)
		}
	}
}

func (r *reloadRecorder) waitError(t *testing.T) error {
	t.Helper()
	select {
	case n := <-r.reloads:
		t.Fatalf("reloaded with %d tokens, want an error", n)
	case err := <-r.errs:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no error within 5s")
	}
	return nil
}

func TestFileReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vnc-tokens")
	writeFile(t, path, "a: h:1\n")
	rec := newRecorder()
	f := openFile(t, path, rec.options())
	checkTable(t, f, map[string]Target{"a": {Network: "tcp", Address: "h:1"}})

	t.Run("edit in place", func(t *testing.T) {
		writeFile(t, path, "a: h:2\nb: h:3\n")
		rec.waitReload(t, 2)
		checkTable(t, f, map[string]Target{"a": {Network: "tcp", Address: "h:2"}, "b": {Network: "tcp", Address: "h:3"}})
	})

	t.Run("rename over", func(t *testing.T) {
		replaceFile(t, path, "c: h:4\n")
		rec.waitReload(t, 1)
		checkTable(t, f, map[string]Target{"c": {Network: "tcp", Address: "h:4"}})
	})

	t.Run("unrelated change is not a reload", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "other"), "x")
		replaceFile(t, path, "c: h:4\n") // same content
		select {
		case n := <-rec.reloads:
			t.Fatalf("reloaded (%d tokens) though nothing changed", n)
		case err := <-rec.errs:
			t.Fatal(err)
		case <-time.After(300 * time.Millisecond):
		}
	})

	t.Run("a malformed line costs only its own token", func(t *testing.T) {
		replaceFile(t, path, "c: h:5\nsecret-token-x h:6\n")
		rec.waitReload(t, 1)
		checkTable(t, f, map[string]Target{"c": {Network: "tcp", Address: "h:5"}})
		sk := f.Skipped()
		if sk.Lines != 1 || !strings.Contains(sk.First[0].Error(), path+":2: ") || strings.Contains(sk.First[0].Error(), "secret-token-x") {
			t.Errorf("skipped %+v: want %s:2 and no token", sk, path)
		}
		replaceFile(t, path, "c: h:4\n")
		rec.waitReload(t, 1)
	})

	t.Run("removed then recreated", func(t *testing.T) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := rec.waitError(t); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("error %v, want os.ErrNotExist", err)
		}
		checkTable(t, f, map[string]Target{"c": {Network: "tcp", Address: "h:4"}})
		replaceFile(t, path, "d: h:7\n")
		rec.waitReload(t, 1)
		checkTable(t, f, map[string]Target{"d": {Network: "tcp", Address: "h:7"}})
	})
}

func TestFileReloadDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a"), "a: h:1\n")
	rec := newRecorder()
	f := openFile(t, dir, rec.options())

	writeFile(t, filepath.Join(dir, "b"), "b: h:2\n")
	rec.waitReload(t, 2)
	checkTable(t, f, map[string]Target{"a": {Network: "tcp", Address: "h:1"}, "b": {Network: "tcp", Address: "h:2"}})

	if err := os.Remove(filepath.Join(dir, "a")); err != nil {
		t.Fatal(err)
	}
	rec.waitReload(t, 1)
	if _, err := resolve(t, f, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed token: %v, want ErrNotFound", err)
	}
}

// TestFileReloadConfigMap swaps a Kubernetes-style "..data" symbolic link,
// the way the kubelet updates a mounted ConfigMap.
func TestFileReloadConfigMap(t *testing.T) {
	for _, asDir := range []bool{false, true} {
		t.Run(fmt.Sprintf("directory=%v", asDir), func(t *testing.T) {
			dir := t.TempDir()
			version := func(name, content string) {
				if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(dir, name, "vnc-tokens"), content)
				if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
					t.Fatal(err)
				}
			}
			version("..2026_01_01_00_00_00.1", "a: h:1\n")
			if err := os.Symlink("..data/vnc-tokens", filepath.Join(dir, "vnc-tokens")); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "vnc-tokens")
			if asDir {
				path = dir
			}
			rec := newRecorder()
			f := openFile(t, path, rec.options())
			checkTable(t, f, map[string]Target{"a": {Network: "tcp", Address: "h:1"}})

			version("..2026_01_01_00_01_00.2", "a: h:2\nb: h:3\n")
			if err := os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1")); err != nil {
				t.Fatal(err)
			}
			rec.waitReload(t, 2)
			checkTable(t, f, map[string]Target{"a": {Network: "tcp", Address: "h:2"}, "b": {Network: "tcp", Address: "h:3"}})
		})
	}
}

// TestFileReloadSymlinkElsewhere follows a token file that is a symbolic
// link into another directory.
func TestFileReloadSymlinkElsewhere(t *testing.T) {
	real := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, real, "a: h:1\n")
	link := filepath.Join(t.TempDir(), "vnc-tokens")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	f := openFile(t, link, rec.options())
	replaceFile(t, real, "a: h:2\n")
	rec.waitReload(t, 1)
	checkTable(t, f, map[string]Target{"a": {Network: "tcp", Address: "h:2"}})
}

func TestFileDebounce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vnc-tokens")
	writeFile(t, path, "a: h:1\n")
	rec := newRecorder()
	opts := rec.options()
	opts.Debounce = 200 * time.Millisecond
	openFile(t, path, opts)
	for i := 2; i <= 10; i++ {
		writeFile(t, path, fmt.Sprintf("a: h:%d\n", i))
		time.Sleep(10 * time.Millisecond)
	}
	rec.waitReload(t, 1)
	select {
	case <-rec.reloads:
		t.Error("a burst of writes caused more than one reload")
	case <-time.After(400 * time.Millisecond):
	}
}

// TestFileConcurrentResolve runs lookups while the file is rewritten; run
// with -race.
func TestFileConcurrentResolve(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vnc-tokens")
	content := func(gen int) string {
		var b strings.Builder
		for i := range 50 {
			fmt.Fprintf(&b, "tok%d: 10.0.%d.%d:%d\n", i, gen%256, i, 5900+gen)
		}
		return b.String()
	}
	writeFile(t, path, content(0))
	rec := newRecorder()
	opts := rec.options()
	opts.Debounce = time.Millisecond
	f := openFile(t, path, opts)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				token := "tok" + strconv.Itoa((w+i)%50)
				got, err := f.Resolve(context.Background(), Query{Token: token})
				if err != nil || got.Network != "tcp" {
					errs <- fmt.Errorf("Resolve(%s) = %+v, %v", token, got, err)
					return
				}
			}
		})
	}
	for gen := 1; gen <= 20; gen++ {
		replaceFile(t, path, content(gen))
		time.Sleep(5 * time.Millisecond)
	}
	deadline := time.After(5 * time.Second)
	for {
		got, _ := f.Resolve(context.Background(), Query{Token: "tok0"})
		if got.Address == "10.0.20.0:5920" {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("last generation not loaded: tok0 -> %+v", got)
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	case err := <-rec.errs:
		t.Fatal(err)
	default:
	}
}

// TestFileCloseStopsWatching checks that Close ends the watcher goroutines.
// It must not run in parallel with other tests that open files.
func TestFileCloseStopsWatching(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vnc-tokens")
	writeFile(t, path, "a: h:1\n")
	var files []*File
	for range 5 {
		f, err := OpenFile(path, FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if !watchersRunning(t) {
		t.Fatal("no watcher goroutine found in the stack dump; the test cannot see leaks")
	}
	writeFile(t, path, "a: h:2\n") // a reload may be pending while closing
	for _, f := range files {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for watchersRunning(t) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("watcher goroutines left after Close:\n%s", buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Lookups still answer from the last table.
	if _, err := resolve(t, files[0], "a"); err != nil {
		t.Errorf("Resolve after Close: %v", err)
	}
}

func watchersRunning(t *testing.T) bool {
	t.Helper()
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	return strings.Contains(stacks, "tokenresolver.(*File).watch") || strings.Contains(stacks, "fsnotify")
}

// TestWebsockifyAgrees reads the same token files with websockify's own
// ReadOnlyTokenFile plugin and checks that both agree on every token.
func TestWebsockifyAgrees(t *testing.T) {
	python := testenv.Require(t, "/usr/bin/python3", "python3")
	if out, err := exec.Command(python, "-c", "import websockify.token_plugins").CombinedOutput(); err != nil {
		msg := fmt.Sprintf("websockify's Python module does not import (install the Debian package websockify): %v: %s", err, out)
		if testenv.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}

	data, err := os.ReadFile("testdata/websockify-tokens")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crlf := filepath.Join(dir, "crlf")
	writeFile(t, crlf, strings.ReplaceAll(string(data), "\n", "\r\n"))
	split := filepath.Join(dir, "split")
	if err := os.Mkdir(split, 0o755); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	half := len(lines) / 2
	writeFile(t, filepath.Join(split, "part1"), strings.Join(lines[:half], ""))
	writeFile(t, filepath.Join(split, "part2"), strings.Join(lines[half:], ""))

	for _, path := range []string{"testdata/websockify-tokens", crlf, split} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			theirs := websockifyTargets(t, python, path)
			f := openFile(t, path, FileOptions{})
			if len(theirs) != f.Len() || len(theirs) != len(websockifyTokens) {
				t.Errorf("websockify read %d tokens, we read %d, want %d", len(theirs), f.Len(), len(websockifyTokens))
			}
			for token, hp := range theirs {
				ours, err := resolve(t, f, token)
				if err != nil {
					t.Errorf("token %q: websockify has %v, we have %v", token, hp, err)
					continue
				}
				if hp[0] == "unix_socket" {
					if ours.Network != "unix" || ours.Address != hp[1] {
						t.Errorf("token %q: websockify has unix socket %q, we have %v", token, hp[1], ours)
					}
					continue
				}
				host, port, err := net.SplitHostPort(ours.Address)
				if err != nil || ours.Network != "tcp" {
					t.Errorf("token %q: websockify has %v, we have %v", token, hp, ours)
					continue
				}
				wantPort, err := strconv.Atoi(hp[1])
				if err != nil {
					t.Errorf("token %q: websockify has port %q", token, hp[1])
				}
				if host != strings.Trim(hp[0], "[]") || port != strconv.Itoa(wantPort) {
					t.Errorf("token %q: websockify has host %q port %q, we have %v", token, hp[0], hp[1], ours)
				}
			}
		})
	}
}

// websockifyTargets returns websockify's table for path: token to
// [host, port], where host "unix_socket" means port is a socket path.
func websockifyTargets(t *testing.T, python, path string) map[string][2]string {
	t.Helper()
	const script = `
import json, sys
from websockify.token_plugins import ReadOnlyTokenFile
plugin = ReadOnlyTokenFile(sys.argv[1])
plugin.lookup("")
json.dump({tok: list(target) for tok, target in plugin._targets.items()}, sys.stdout)
`
	cmd := exec.Command(python, "-c", script, path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("websockify: %v: %s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("websockify complained about %s: %s", path, stderr.String())
	}
	var targets map[string][2]string
	if err := json.Unmarshal(out, &targets); err != nil {
		t.Fatalf("websockify's output %q: %v", out, err)
	}
	return targets
}

// TestFileLogStorm: a log written into the token directory (Caddy's own,
// say) is not read and does not trigger reloads; an error that stays the
// same is reported once.
func TestFileLogStorm(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "tokens"), "a: h:1\n")
	rec := newRecorder()
	f := openFile(t, dir, rec.options())
	logFile, err := os.OpenFile(filepath.Join(dir, "caddy.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	for i := range 50 {
		fmt.Fprintf(logFile, `{"level":"error","msg":"token file not reloaded","n":%d}`+"\n", i)
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case n := <-rec.reloads:
		t.Fatalf("reloaded (%d tokens) for a log line", n)
	case err := <-rec.errs:
		t.Fatalf("reported %v for a log line", err)
	case <-time.After(300 * time.Millisecond):
	}
	checkTable(t, f, map[string]Target{"a": {Network: "tcp", Address: "h:1"}})

	// A token file that went missing is reported once, however much else
	// changes around it.
	file := filepath.Join(t.TempDir(), "vnc-tokens")
	writeFile(t, file, "b: h:2\n")
	rec2 := newRecorder()
	openFile(t, file, rec2.options())
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	rec2.waitError(t)
	for i := range 5 {
		writeFile(t, file+".tmp", fmt.Sprint(i)) // a neighbour, ignored
		writeFile(t, file, "b: h:2\n")           // back, and gone again
		if err := os.Remove(file); err != nil {
			t.Fatal(err)
		}
		time.Sleep(150 * time.Millisecond)
	}
	errs := 0
	for done := false; !done; {
		select {
		case <-rec2.errs:
			errs++
		case <-rec2.reloads:
		case <-time.After(300 * time.Millisecond):
			done = true
		}
	}
	if errs > 0 {
		t.Errorf("the same error reported %d more times", errs)
	}
}
