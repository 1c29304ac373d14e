package tokenresolver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/fsnotify/fsnotify"
)

// File resolves tokens from a websockify token file, or a directory of them,
// and reloads it when it changes.
//
// The format is websockify's (TokenFile, ReadOnlyTokenFile): one
// "token: target" per line, split at the first colon that is followed by
// white space; the target is anything ParseTarget accepts. Surrounding white
// space is ignored, a line whose first non-blank character is '#' is a
// comment, blank lines are skipped, and CRLF, LF and CR line endings all
// work. A malformed line is skipped, as websockify does, and reported with
// its file and line (never the token), so that one bad line costs only its
// own token. A token that appears twice takes its last target, as in
// websockify.
//
// A directory means every regular file in it (symbolic links followed), read
// in name order, so across files too the last one wins; plain dot files are
// read, as websockify reads them. Skipped are Kubernetes' "..data" entries
// (names beginning with ".."), editor leftovers (names beginning with '#' or
// ".#", or ending with '~', ".swp", ".swo", ".swx", ".tmp", ".bak", ".orig"
// or ".rej"), packaging leftovers (".dpkg-old", ".dpkg-new", ".dpkg-dist",
// ".rpmnew", ".rpmsave") and logs (".log"): a log written into the
// directory, Caddy's own say, is no token file. Subdirectories are not
// descended into.
//
// File watches the directory that holds the file (or the directory itself),
// so editors that save by renaming a new file over the old one and
// Kubernetes ConfigMap updates, which swap a symbolic link, are both seen.
// Changes to other files than the token files are ignored; bursts of
// changes are read once, after they settle. A reload that fails (the file
// gone or unreadable) keeps the last good table in use and reports the
// error, once while it stays the same. Lookups never block on a reload.
type File struct {
	path     string
	opts     FileOptions
	table    atomic.Pointer[tokenTable]
	watcher  *fsnotify.Watcher
	done     chan struct{}
	stopped  chan struct{}
	closing  sync.Once
	closeErr error

	// failing is the error of the last reload, if it failed; only the
	// watch goroutine uses it.
	failing string
}

// FileOptions are File's optional settings.
type FileOptions struct {
	// OnReload is called after the file changed and was read again, with
	// the number of tokens now in use and the lines skipped. It is not
	// called for the first load in OpenFile (see File.Skipped).
	OnReload func(tokens int, skipped Skipped)
	// OnError is called when a reload fails (the previous table stays in
	// use) or watching the file reports a problem.
	OnError func(error)
	// Debounce is how long changes must pause before the file is read
	// again. Default: 100ms.
	Debounce time.Duration
}

// tokenTable is one load of the token file; never modified once published.
type tokenTable struct {
	targets map[string]Target
	skipped Skipped
	digest  [sha256.Size]byte
}

// Skipped are the malformed lines a load left out.
type Skipped struct {
	// Lines is how many; First holds the first maxSkippedShown of them.
	Lines int
	First []*TokenFileError
}

// maxSkippedShown bounds the malformed lines kept to show, so that a file
// that is not a token file at all costs no more than a few.
const maxSkippedShown = 20

func (sk *Skipped) add(e *TokenFileError) {
	sk.Lines++
	if len(sk.First) < maxSkippedShown {
		sk.First = append(sk.First, e)
	}
}

// OpenFile reads the token file or directory at path and starts watching it.
// The returned File must be closed to stop watching.
func OpenFile(path string, opts FileOptions) (*File, error) {
	if path == "" {
		return nil, errors.New("token file: no path given")
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching token file %s: %w", path, err)
	}
	f := &File{
		path:    path,
		opts:    opts,
		watcher: w,
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	// Watch before the first read, so that no change between the two is
	// missed.
	if err := f.addWatches(); err != nil {
		w.Close()
		return nil, err
	}
	table, err := loadTokenTable(path)
	if err != nil {
		w.Close()
		return nil, err
	}
	f.table.Store(table)
	go f.watch()
	return f, nil
}

// Skipped returns the malformed lines left out of the tokens in use.
func (f *File) Skipped() Skipped {
	return f.table.Load().skipped
}

// Resolve returns the target of q.Token, or ErrNotFound.
func (f *File) Resolve(_ context.Context, q Query) (Target, error) {
	if t, ok := f.table.Load().targets[q.Token]; ok {
		return t, nil
	}
	return Target{}, ErrNotFound
}

// Len returns the number of tokens in the table in use.
func (f *File) Len() int {
	return len(f.table.Load().targets)
}

// Path returns the path the File was opened with.
func (f *File) Path() string {
	return f.path
}

// Close stops watching the file and waits until the watcher has stopped.
// Lookups keep answering from the last table.
func (f *File) Close() error {
	f.closing.Do(func() {
		close(f.done)
		f.closeErr = f.watcher.Close()
		<-f.stopped
	})
	return f.closeErr
}

// addWatches watches the directory holding the file (or the directory
// itself), and also where a symbolic link at path points, since edits
// there change what path reads.
func (f *File) addWatches() error {
	fi, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	dirs := make([]string, 0, 2)
	if fi.IsDir() {
		dirs = append(dirs, f.path)
	} else {
		dirs = append(dirs, filepath.Dir(f.path))
	}
	if real, err := filepath.EvalSymlinks(f.path); err == nil {
		if !fi.IsDir() {
			real = filepath.Dir(real)
		}
		if real != dirs[0] {
			dirs = append(dirs, real)
		}
	}
	for _, d := range dirs {
		if err := f.watcher.Add(d); err != nil {
			return fmt.Errorf("watching token file %s: %w", f.path, err)
		}
	}
	return nil
}

func (f *File) watch() {
	defer close(f.stopped)
	settle := time.NewTimer(f.opts.Debounce)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-f.done:
			return
		case ev, ok := <-f.watcher.Events:
			if !ok {
				return
			}
			// A change to a token file, or to what leads to one (a
			// symbolic link swapped, a file renamed into place); reading
			// again is cheap and an unchanged table is not reported.
			if f.concerns(ev.Name) {
				settle.Reset(f.opts.Debounce)
			}
		case err, ok := <-f.watcher.Errors:
			if !ok {
				return
			}
			f.report(fmt.Errorf("watching token file %s: %w", f.path, err))
			// Events may have been lost; read the file again to be sure.
			settle.Reset(f.opts.Debounce)
		case <-settle.C:
			f.reload()
		}
	}
}

// concerns reports whether a change to the named file may change the
// tokens: the token file itself, a token file of the directory, or, for a
// token file given by a symbolic link, anything in the directories
// watched (the link's target may have moved).
func (f *File) concerns(name string) bool {
	fi, err := os.Stat(f.path)
	if err == nil && fi.IsDir() {
		return !skipTokenFileName(filepath.Base(name)) || strings.HasPrefix(filepath.Base(name), "..")
	}
	if filepath.Clean(name) == filepath.Clean(f.path) {
		return true
	}
	if real, err := filepath.EvalSymlinks(f.path); err == nil && filepath.Clean(name) == real {
		return true
	}
	// A symbolic link at path, or in the way to it, may have been swapped
	// (Kubernetes' ..data): then path reads something else.
	lfi, err := os.Lstat(f.path)
	return err != nil || lfi.Mode()&os.ModeSymlink != 0
}

func (f *File) reload() {
	table, err := loadTokenTable(f.path)
	if err != nil {
		if msg := err.Error(); msg != f.failing {
			f.failing = msg
			f.report(fmt.Errorf("reloading token file, keeping the previous tokens: %w", err))
		}
		return
	}
	// A symbolic link may now point somewhere else.
	if err := f.addWatches(); err != nil {
		f.report(err)
	}
	if table.digest == f.table.Load().digest && f.failing == "" {
		return
	}
	f.failing = ""
	f.table.Store(table)
	if f.opts.OnReload != nil {
		f.opts.OnReload(len(table.targets), table.skipped)
	}
}

func (f *File) report(err error) {
	select {
	case <-f.done:
		return // errors from the watcher closing are not news
	default:
	}
	if f.opts.OnError != nil {
		f.opts.OnError(err)
	}
}

// loadTokenTable reads a token file, or every token file in a directory.
func loadTokenTable(path string) (*tokenTable, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	var files []string
	switch {
	case fi.Mode().IsRegular():
		files = []string{path}
	case fi.IsDir():
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("token file directory: %w", err)
		}
		for _, e := range entries { // ReadDir sorts by name
			if skipTokenFileName(e.Name()) {
				continue
			}
			name := filepath.Join(path, e.Name())
			fi, err := os.Stat(name) // follows symbolic links
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					continue // a dangling link, or removed meanwhile
				}
				return nil, fmt.Errorf("token file: %w", err)
			}
			if fi.Mode().IsRegular() {
				files = append(files, name)
			}
		}
	default:
		return nil, fmt.Errorf("token file %s: not a regular file or directory", path)
	}

	table := &tokenTable{targets: make(map[string]Target)}
	h := sha256.New()
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
		fmt.Fprintf(h, "%d:%s%d:", len(name), name, len(data))
		h.Write(data)
		parseTokenFile(name, data, table.targets, &table.skipped)
	}
	h.Sum(table.digest[:0])
	return table, nil
}

// skipTokenFileName reports whether a directory entry is a hidden or an
// editor's temporary file rather than a token file.
func skipTokenFileName(name string) bool {
	for _, prefix := range []string{"..", "#", ".#"} {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	for _, suffix := range []string{"~", ".swp", ".swo", ".swx", ".tmp", ".bak", ".orig", ".rej",
		".dpkg-old", ".dpkg-new", ".dpkg-dist", ".rpmnew", ".rpmsave", ".log"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

// TokenFileError is a malformed line in a token file. It names the file and
// line, never the token.
type TokenFileError struct {
	File string
	Line int
	Err  error
}

func (e *TokenFileError) Error() string {
	return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Err.Error()
}

func (e *TokenFileError) Unwrap() error { return e.Err }

// parseTokenFile adds the tokens of one file to targets; a token seen before
// is overwritten. A malformed line is left out and added to skipped; name
// is used in those errors only.
func parseTokenFile(name string, data []byte, targets map[string]Target, skipped *Skipped) {
	// A byte order mark from a Windows editor would otherwise end up in
	// the first token.
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		var line []byte
		line, data = cutLine(data)
		s := strings.TrimFunc(string(line), isSpace)
		if s == "" || s[0] == '#' {
			continue
		}
		token, target, err := splitTokenLine(s)
		if err != nil {
			skipped.add(&TokenFileError{File: name, Line: lineNo, Err: err})
			continue
		}
		t, err := ParseTarget(target)
		if err != nil {
			skipped.add(&TokenFileError{File: name, Line: lineNo, Err: err})
			continue
		}
		targets[token] = t
	}
}

// cutLine splits off the first line, ending at LF, CRLF or a lone CR as
// Python's universal newlines do.
func cutLine(data []byte) (line, rest []byte) {
	i := bytes.IndexAny(data, "\r\n")
	if i < 0 {
		return data, nil
	}
	if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
		return data[:i], data[i+2:]
	}
	return data[:i], data[i+1:]
}

// splitTokenLine splits a trimmed, non-comment line as websockify's
// re.split(r':\s', line) does: there must be exactly one colon followed by
// white space. Its errors never contain the line, which holds the token.
func splitTokenLine(s string) (token, target string, err error) {
	i, n := colonSpace(s)
	if i < 0 {
		return "", "", errors.New(`missing ": " between token and target`)
	}
	token, target = s[:i], s[i+1+n:]
	if j, _ := colonSpace(target); j >= 0 {
		return "", "", errors.New(`more than one ": " in the line (a target is host:port, without a space)`)
	}
	if token == "" {
		return "", "", errors.New("empty token before the colon")
	}
	return token, target, nil
}

// colonSpace finds the first colon followed by a white space character and
// returns its index and the size of that character, or -1.
func colonSpace(s string) (int, int) {
	for i := 0; i < len(s); i++ {
		if s[i] != ':' || i+1 == len(s) {
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i+1:])
		if isSpace(r) {
			return i, n
		}
	}
	return -1, 0
}
