package recording

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/fbs"
)

// fillUntilError records 32 KiB chunks until the recording reports a
// failure, then ends it, and returns the error Close gave.
func fillUntilError(t *testing.T, dir string) (*Recording, error, error) {
	t.Helper()
	failed := make(chan error, 1)
	rec, err := Start(Config{Dir: dir, OnError: func(err error) { failed <- err }}, Meta{Session: "s", TokenHash: "h", Target: "t"})
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 32<<10)
	var reported error
	deadline := time.Now().Add(20 * time.Second)
	for reported == nil {
		if time.Now().After(deadline) {
			t.Fatal("the disk never filled")
		}
		for i := range chunk {
			chunk[i] = byte(i * 7)
		}
		_ = rec.Server(chunk) // the error also comes through OnError
		select {
		case reported = <-failed:
		case <-time.After(5 * time.Millisecond):
		}
	}
	if !errors.Is(rec.Server(chunk), reported) {
		t.Fatal("after a failed write, Server does not return its error")
	}
	return rec, reported, rec.Close("client closed")
}

// checkIncomplete checks what a failed recording leaves: a sidecar that
// says incomplete and why, and an FBS file of whole blocks only.
func checkIncomplete(t *testing.T, dir string, rec *Recording, want error) {
	t.Helper()
	s, err := ReadSidecar(dir, rec.ID())
	if err != nil {
		t.Fatal(err)
	}
	if s.Complete || s.Error == "" {
		t.Fatalf("sidecar after a failed write: %+v", s)
	}
	f, err := os.Open(filepath.Join(dir, rec.ID()+".fbs"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := fbs.NewReader(f, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the FBS file is cut inside a block after %d blocks: %v", n, err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("nothing was written before the disk filled")
	}
	t.Logf("failed with %v after %d whole blocks; sidecar error %q", want, n, s.Error)
}

// A file-size limit (RLIMIT_FSIZE) stands in for a full disk without
// privileges: the test binary runs this test again in a child process with
// the limit set, since the limit applies to the whole process.
func TestDiskFullFileSizeLimit(t *testing.T) {
	if dir := os.Getenv("RECORDING_FSIZE_CHILD"); dir != "" {
		// The kernel sends SIGXFSZ on a write over the limit; ignored, the
		// write fails with EFBIG instead of killing the process.
		signal.Ignore(syscall.SIGXFSZ)
		lim := syscall.Rlimit{Cur: 256 << 10, Max: 256 << 10}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			t.Fatalf("setrlimit: %v", err)
		}
		rec, reported, closeErr := fillUntilError(t, dir)
		if !errors.Is(reported, syscall.EFBIG) || !errors.Is(closeErr, syscall.EFBIG) {
			t.Fatalf("OnError got %v, Close %v; want EFBIG", reported, closeErr)
		}
		checkIncomplete(t, dir, rec, reported)
		fmt.Println("child ok")
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDiskFullFileSizeLimit$", "-test.v")
	cmd.Env = append(os.Environ(), "RECORDING_FSIZE_CHILD="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "child ok") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

// A real full file system: a 1 MiB tmpfs, where the kernel allows root to
// mount one.
func TestDiskFullTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root; TestDiskFullFileSizeLimit covers a full disk without it")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); TestDiskFullFileSizeLimit covers a full disk", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	rec, reported, closeErr := fillUntilError(t, dir)
	if !errors.Is(reported, syscall.ENOSPC) || !errors.Is(closeErr, syscall.ENOSPC) {
		t.Fatalf("OnError got %v, Close %v; want ENOSPC", reported, closeErr)
	}
	checkIncomplete(t, dir, rec, reported)
}
