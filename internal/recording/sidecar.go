package recording

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// Sidecar is <id>.json: what a recording is of and whether it is whole.
// The admin API lists these as they are.
type Sidecar struct {
	ID string `json:"id"`
	// Session is the console's session id, as the logs and the admin API
	// name it.
	Session string `json:"session"`
	// TokenHash is the token's short hash; the token is never stored.
	TokenHash string    `json:"token_hash"`
	Target    string    `json:"target"`
	Started   time.Time `json:"started"`
	// Ended is null while the console lives.
	Ended *time.Time `json:"ended"`
	// Reason is why the console ended.
	Reason string `json:"reason"`
	// Bytes is how many bytes of the browser's stream were recorded.
	Bytes int64 `json:"bytes"`
	// DurationMs is the timestamp of the last block.
	DurationMs uint32 `json:"duration_ms"`
	// Complete is true once the console has ended and every byte it
	// received is on disk; false while recording and after any loss.
	Complete bool `json:"complete"`
	// Error says why an ended recording is not complete.
	Error         string `json:"error,omitempty"`
	InputIncluded bool   `json:"input_included"`
	InputBytes    int64  `json:"input_bytes,omitempty"`
	// PixelFormats are the browser's SetPixelFormat messages in order; the
	// server's stream after each is in that format.
	PixelFormats []PixelFormatChange `json:"pixel_formats"`
}

// PixelFormatChange is one SetPixelFormat the browser sent.
type PixelFormatChange struct {
	// Ms is when, on the timeline of the FBS blocks.
	Ms uint32 `json:"ms"`
	// Offset is how many bytes of the browser's stream had been recorded
	// before it.
	Offset       int64  `json:"offset"`
	BitsPerPixel uint8  `json:"bits_per_pixel"`
	Depth        uint8  `json:"depth"`
	BigEndian    bool   `json:"big_endian"`
	TrueColour   bool   `json:"true_colour"`
	RedMax       uint16 `json:"red_max"`
	GreenMax     uint16 `json:"green_max"`
	BlueMax      uint16 `json:"blue_max"`
	RedShift     uint8  `json:"red_shift"`
	GreenShift   uint8  `json:"green_shift"`
	BlueShift    uint8  `json:"blue_shift"`
}

func newPixelFormatChange(ms uint32, offset int64, wire []byte) PixelFormatChange {
	pf := rfb.UnmarshalPixelFormat(wire)
	return PixelFormatChange{
		Ms: ms, Offset: offset,
		BitsPerPixel: pf.BitsPerPixel, Depth: pf.Depth, BigEndian: pf.BigEndian, TrueColour: pf.TrueColour,
		RedMax: pf.RedMax, GreenMax: pf.GreenMax, BlueMax: pf.BlueMax,
		RedShift: pf.RedShift, GreenShift: pf.GreenShift, BlueShift: pf.BlueShift,
	}
}

// writeSidecar replaces path atomically: a reader sees the old sidecar or
// the new one, never half of one. A durable one is synced, with its
// directory, before writeSidecar returns, so that a crash leaves it
// whole; the first sidecar of a recording (complete: false) need not be,
// since a recording without a sidecar is as incomplete as one whose
// sidecar says so, and two syncs at every console's start would hold up
// its opening on the disk's pace.
func writeSidecar(path string, s Sidecar, durable bool) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding sidecar: %w", err)
	}
	b = append(b, '\n')
	dir, name := filepath.Split(path)
	// A leading dot keeps the temporary file out of List and retention.
	tmp, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return fmt.Errorf("writing sidecar: %w", err)
	}
	_, err = tmp.Write(b)
	if err == nil && durable {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing sidecar: %w", err)
	}
	if !durable {
		return nil
	}
	// The rename is durable only once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// ErrNotFound: no recording has this id (or the id is not one a recorder
// makes, such as a path).
var ErrNotFound = fmt.Errorf("recording not found: %w", fs.ErrNotExist)

// validID reports whether id can name a recording: letters, digits, '-'
// and '_' only, so that no id reaches outside the directory or names a
// hidden temporary file.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// splitName returns the id and extension of a recording's file name, or
// ok false for any other file.
func splitName(name string) (id, ext string, ok bool) {
	for _, e := range []string{".fbs", ".input", ".json"} {
		if s, found := strings.CutSuffix(name, e); found && validID(s) {
			return s, e, true
		}
	}
	return "", "", false
}

// List returns the sidecars in dir, oldest first. Files that are not
// sidecars, or do not parse, are left out.
func List(dir string) ([]Sidecar, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing recordings: %w", err)
	}
	var out []Sidecar
	for _, e := range entries {
		id, ext, ok := splitName(e.Name())
		if !ok || ext != ".json" || !e.Type().IsRegular() {
			continue
		}
		s, err := ReadSidecar(dir, id)
		if err != nil {
			continue
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Sidecar) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// ReadSidecar reads the sidecar of recording id in dir.
func ReadSidecar(dir, id string) (Sidecar, error) {
	var s Sidecar
	f, err := openRegular(dir, id, ".json")
	if err != nil {
		return s, err
	}
	defer f.Close()
	// A sidecar is small; a huge file here is not one of ours.
	info, err := f.Stat()
	if err != nil {
		return s, err
	}
	if info.Size() > 1<<20 {
		return s, fmt.Errorf("sidecar %s is %d bytes", id, info.Size())
	}
	if err := json.NewDecoder(f).Decode(&s); err != nil {
		return s, fmt.Errorf("reading sidecar %s: %w", id, err)
	}
	if s.ID != id {
		return s, fmt.Errorf("sidecar %s names recording %q", id, s.ID)
	}
	return s, nil
}

// Open opens the FBS file of recording id in dir for reading, for
// http.ServeContent (which answers Range requests from it). An id that is
// not a plain name, such as "../x", is ErrNotFound; so is a symbolic link.
// The caller closes the file.
func Open(dir, id string) (*os.File, error) {
	return openRegular(dir, id, ".fbs")
}

func openRegular(dir, id, ext string) (*os.File, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	path := filepath.Join(dir, id+ext)
	info, err := os.Lstat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("opening recording: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, ErrNotFound
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening recording: %w", err)
	}
	return f, nil
}

// live holds the recordings this process is writing, by directory and id.
// It is process-wide rather than per configuration because consoles, and
// so their recordings, outlive a config reload, and the new config's
// retention must not delete them.
var live sync.Map

func markLive(key string)   { live.Store(key, struct{}{}) }
func unmarkLive(key string) { live.Delete(key) }
func isLive(dir, id string) bool {
	_, ok := live.Load(filepath.Join(dir, id))
	return ok
}

// liveIn returns the ids of the recordings live in dir.
func liveIn(dir string) map[string]bool {
	ids := map[string]bool{}
	prefix := filepath.Clean(dir) + string(filepath.Separator)
	live.Range(func(k, _ any) bool {
		if id, ok := strings.CutPrefix(k.(string), prefix); ok && !strings.ContainsRune(id, filepath.Separator) {
			ids[id] = true
		}
		return true
	})
	return ids
}
