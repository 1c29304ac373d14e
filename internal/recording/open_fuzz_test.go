package recording

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen: whatever id the admin API is given, Open and ReadSidecar open
// a recording's own file in the directory or say ErrNotFound; nothing
// outside the directory, no hidden file and no other kind of file is ever
// opened.
func FuzzOpen(f *testing.F) {
	root := f.TempDir()
	dir := filepath.Join(root, "recordings")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		f.Fatal(err)
	}
	for _, name := range []string{"rec-1.fbs", "rec-1.json", ".hidden.fbs", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("FBS 001.000\n"), 0o600); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "secret.fbs"), []byte("secret"), 0o600); err != nil {
		f.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "secret.fbs"), filepath.Join(dir, "link.fbs")); err != nil {
		f.Fatal(err)
	}
	for _, id := range []string{"rec-1", "../secret", "link", ".hidden", "notes.txt", "", "rec-1.fbs", "/etc/passwd", "..", "rec-1\x00"} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		file, err := Open(dir, id)
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("Open(%q): %v, want ErrNotFound", id, err)
			}
		} else {
			file.Close()
			if id != "rec-1" {
				t.Fatalf("Open(%q) opened %s", id, file.Name())
			}
		}
		if _, err := ReadSidecar(dir, id); err == nil {
			t.Fatalf("ReadSidecar(%q) read a sidecar from a file that is none", id)
		}
	})
}
