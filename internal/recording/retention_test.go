package recording

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// fakeRecording writes the files of a finished recording that started at
// started, size bytes of stream in all.
func fakeRecording(t *testing.T, dir string, started time.Time, size int, input bool) string {
	t.Helper()
	id, err := newID(started)
	if err != nil {
		t.Fatal(err)
	}
	ended := started.Add(time.Minute)
	if err := writeSidecar(filepath.Join(dir, id+".json"), Sidecar{ID: id, Started: started, Ended: &ended, Complete: true, PixelFormats: []PixelFormatChange{}}, false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, id+".fbs"), make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	if input {
		if err := os.WriteFile(filepath.Join(dir, id+".input"), make([]byte, size/2), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

func dirSize(t *testing.T, dir string) (total int64, names []string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue // deleted or renamed (a sidecar's temporary file) meanwhile
		}
		total += info.Size()
		names = append(names, e.Name())
	}
	return total, names
}

func exists(dir, name string) bool {
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

func TestRetentionMaxAge(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	old := fakeRecording(t, dir, now.Add(-49*time.Hour), 1000, true)
	recent := fakeRecording(t, dir, now.Add(-47*time.Hour), 1000, true)
	foreign := "notes.txt"
	os.WriteFile(filepath.Join(dir, foreign), []byte("not a recording"), 0o600)
	hidden := ".x.json.123"
	os.WriteFile(filepath.Join(dir, hidden), []byte("{}"), 0o600)
	// Old files, but not a recording's names: never touched.
	for _, n := range []string{foreign, hidden} {
		os.Chtimes(filepath.Join(dir, n), now.Add(-100*time.Hour), now.Add(-100*time.Hour))
	}

	r := NewRetention(dir, 48*time.Hour, 0)
	r.now = func() time.Time { return now }
	deleted, err := r.Run()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(deleted, []string{old}) {
		t.Fatalf("deleted %v, want only %s", deleted, old)
	}
	for _, ext := range []string{".fbs", ".input", ".json"} {
		if exists(dir, old+ext) {
			t.Errorf("%s%s is still there", old, ext)
		}
		if !exists(dir, recent+ext) {
			t.Errorf("%s%s was deleted", recent, ext)
		}
	}
	if !exists(dir, foreign) || !exists(dir, hidden) {
		t.Error("retention deleted a file that is not a recording's")
	}
}

// max_total counts every file of a recording and deletes the oldest first,
// never a live one.
func TestRetentionMaxTotal(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	var ids []string
	for i := range 5 {
		ids = append(ids, fakeRecording(t, dir, now.Add(time.Duration(i-10)*time.Hour), 10_000, true))
	}
	// A live recording, older than all of them and alone over the limit.
	live, err := Start(Config{Dir: dir}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Server(make([]byte, 40_000)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		info, err := os.Stat(filepath.Join(dir, live.ID()+".fbs"))
		return err == nil && info.Size() > 40_000
	})
	os.Chtimes(filepath.Join(dir, live.ID()+".fbs"), now.Add(-100*time.Hour), now.Add(-100*time.Hour))

	total, _ := dirSize(t, dir)
	// Each fake recording is 15,000 bytes plus a sidecar: room for the
	// live one and about two others.
	limit := total - 3*15_000 - 100
	r := NewRetention(dir, 0, limit)
	deleted, err := r.Run()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(deleted, ids[:3]) {
		t.Fatalf("deleted %v, want the three oldest %v", deleted, ids[:3])
	}
	if after, _ := dirSize(t, dir); after > limit {
		t.Fatalf("%d bytes after retention, limit %d", after, limit)
	}
	if !exists(dir, live.ID()+".fbs") {
		t.Fatal("retention deleted a live recording")
	}

	// Once it has ended it is the oldest, and goes first.
	if err := live.Close("done"); err != nil {
		t.Fatal(err)
	}
	deleted, err = NewRetention(dir, 0, limit-40_000).Run()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(deleted, []string{live.ID()}) {
		t.Fatalf("deleted %v, want the ended recording %s", deleted, live.ID())
	}
}

// Once a console has ended, its directory is within max_total within a
// second: the recording's end triggers the background run.
func TestRetentionAfterEnd(t *testing.T) {
	dir := t.TempDir()
	for i := range 3 {
		fakeRecording(t, dir, time.Now().Add(time.Duration(i-5)*time.Hour), 50_000, false)
	}
	const limit = 120_000
	r := NewRetention(dir, 0, limit)
	r.interval = time.Hour // only the trigger can run it in time
	reports := make(chan []string, 10)
	r.Report = func(deleted []string, err error) { reports <- deleted }
	rec, err := Start(Config{Dir: dir, Retention: r}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	defer r.Stop()
	<-reports // the first run, at Start: one old recording goes, the live one stays
	if err := rec.Server(make([]byte, 60_000)); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close("client closed"); err != nil {
		t.Fatal(err)
	}
	ended := time.Now()
	waitFor(t, func() bool {
		total, _ := dirSize(t, dir)
		return total <= limit
	})
	if d := time.Since(ended); d > time.Second {
		t.Fatalf("the directory was within max_total %v after the end", d)
	}
	if !exists(dir, rec.ID()+".fbs") {
		t.Fatal("the newest recording was deleted rather than the older ones")
	}
}

func TestRetentionStop(t *testing.T) {
	r := NewRetention(t.TempDir(), time.Hour, 0)
	r.Stop() // never started: returns at once
	r.Start()
	r.Trigger()
	r.Stop()
	r.Stop()
	r.Trigger() // after Stop: never blocks
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestListAndOpen(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().UTC().Truncate(time.Second)
	b := fakeRecording(t, dir, now.Add(-time.Hour), 100, false)
	a := fakeRecording(t, dir, now.Add(-2*time.Hour), 100, false)
	os.WriteFile(filepath.Join(dir, "broken.json"), []byte("{"), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o600)
	list, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != a || list[1].ID != b {
		t.Fatalf("List: %+v", list)
	}

	content := []byte("FBS 001.000\n0123456789abcdef")
	os.WriteFile(filepath.Join(dir, a+".fbs"), content, 0o600)
	outside := filepath.Join(filepath.Dir(dir), "secret.fbs")
	os.WriteFile(outside, []byte("outside"), 0o600)
	t.Cleanup(func() { os.Remove(outside) })
	os.Symlink(outside, filepath.Join(dir, "link.fbs"))
	for _, id := range []string{"", "../secret", "..", "a/b", a + ".fbs", ".x", "link", "missing", "/etc/passwd", a + "\x00"} {
		if f, err := Open(dir, id); !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
			if f != nil {
				f.Close()
			}
			t.Errorf("Open(%q): %v, want ErrNotFound", id, err)
		}
	}

	// http.ServeContent answers a Range request from the opened file.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		f, err := Open(dir, req.URL.Query().Get("id"))
		if err != nil {
			http.NotFound(w, req)
			return
		}
		defer f.Close()
		info, _ := f.Stat()
		http.ServeContent(w, req, "", info.ModTime(), f)
	}))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/?id="+a, nil)
	req.Header.Set("Range", "bytes=12-15")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, []byte("0123")) {
		t.Fatalf("Range request: %d %q", resp.StatusCode, body)
	}
}

// A run after a recording's end takes the files of ended recordings as the
// last run saw them, but looks again at a live recording's, which grow:
// the size it counts is the final one once the recording has ended.
func TestRetentionKnownFiles(t *testing.T) {
	dir := t.TempDir()
	old := fakeRecording(t, dir, time.Now().Add(-5*time.Hour), 10_000, false)
	rec, err := Start(Config{Dir: dir}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRetention(dir, 0, 1<<40)
	if deleted, err := r.run(true); err != nil || len(deleted) > 0 {
		t.Fatalf("deleted %v, %v", deleted, err)
	}
	if _, ok := r.known[rec.ID()+".fbs"]; ok {
		t.Fatal("a live recording's file is taken as known")
	}
	if _, ok := r.known[old+".fbs"]; !ok {
		t.Fatal("an ended recording's file is not known after a run")
	}
	if err := rec.Server(make([]byte, 100_000)); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close("done"); err != nil {
		t.Fatal(err)
	}
	if deleted, err := r.run(true); err != nil || len(deleted) > 0 {
		t.Fatalf("deleted %v, %v", deleted, err)
	}
	total, _ := dirSize(t, dir)
	// Just under what is there: the oldest goes, whose files were known,
	// if the ended recording counts with all it wrote.
	r.maxTotal = total - 1
	deleted, err := r.run(true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(deleted, []string{old}) {
		t.Fatalf("deleted %v, want %s", deleted, old)
	}
	if _, ok := r.known[old+".fbs"]; ok {
		t.Fatal("a deleted recording's file is still known")
	}
	// An ended recording's files deleted behind retention's back are no
	// longer counted.
	for _, ext := range []string{".fbs", ".json"} {
		if err := os.Remove(filepath.Join(dir, rec.ID()+ext)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.run(true); err != nil {
		t.Fatal(err)
	}
	if len(r.known) != 0 {
		t.Fatalf("known after every recording went: %v", r.known)
	}
}
