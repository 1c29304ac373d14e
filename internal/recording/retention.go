package recording

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// RetentionInterval is how often retention runs besides when a recording
// ends.
const RetentionInterval = time.Minute

// Retention keeps a recording directory within an age and a total size:
// a recording older than MaxAge is deleted, then the oldest ones until all
// the files of all recordings fit in MaxTotal. A recording this process is
// still writing is never deleted; neither is any file that is not a
// recording's.
//
// Live recordings count towards MaxTotal but are left alone, so a
// directory whose live recordings alone exceed it stays over until they
// end. Liveness is known per process: two processes must not share a
// directory.
//
// A run reads the directory once and looks at each file once (no file is
// opened), so its cost is one directory listing however many recordings
// end. A run after a recording's end looks only at the files the last run
// did not see, or saw live (those of ended recordings no longer change);
// the periodic run looks at every file again, and so sees a file changed
// behind its back within RetentionInterval.
type Retention struct {
	dir      string
	maxAge   time.Duration
	maxTotal int64
	// Report, if set (before Start), is told the result of every
	// background run that deleted something or failed.
	Report func(deleted []string, err error)

	now      func() time.Time
	interval time.Duration
	trigger  chan struct{}
	stop     chan struct{}
	done     chan struct{}

	mu      sync.Mutex // guards started and stopped
	started bool
	stopped bool
	runMu   sync.Mutex // one run at a time; guards known
	// known is what the last run found of the files of recordings that
	// had ended (none of this process's live ones), by name: such files
	// no longer change, so a run after a recording's end (runKnown)
	// lists the directory but looks only at files it has not seen.
	known map[string]fileFacts
}

// fileFacts is what a run needs of a file.
type fileFacts struct {
	size    int64
	modTime time.Time
}

// NewRetention returns the retention of dir; zero maxAge or maxTotal means
// no limit of that kind.
func NewRetention(dir string, maxAge time.Duration, maxTotal int64) *Retention {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return &Retention{
		dir: dir, maxAge: maxAge, maxTotal: maxTotal,
		now: time.Now, interval: RetentionInterval,
		trigger: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Start runs retention in the background: now, every RetentionInterval,
// and soon after each Trigger. Triggers that arrive while a run is due
// make one run, so a thousand consoles ending at once cost two runs.
func (r *Retention) Start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.stopped {
		return
	}
	r.started = true
	r.Trigger()
	go r.loop()
}

// Trigger asks the background loop for a run; it never blocks.
func (r *Retention) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Stop ends the background loop and waits for a run in progress.
func (r *Retention) Stop() {
	r.mu.Lock()
	started := r.started
	if !r.stopped {
		r.stopped = true
		close(r.stop)
	}
	r.mu.Unlock()
	if started {
		<-r.done
	}
}

func (r *Retention) loop() {
	defer close(r.done)
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	gap := time.NewTimer(retentionGap)
	gap.Stop()
	for {
		// The periodic run looks at every file; one after a recording's
		// end, only at those it has not seen (the first run sees them
		// all).
		periodic := false
		select {
		case <-r.stop:
			return
		case <-tick.C:
			periodic = true
		case <-r.trigger:
		}
		deleted, err := r.run(!periodic)
		if r.Report != nil && (len(deleted) > 0 || err != nil) {
			r.Report(deleted, err)
		}
		// A run reads the whole directory: while consoles churn, the
		// triggers of a quarter second make one run, still well within
		// the second a recording's end is promised its retention in.
		gap.Reset(retentionGap)
		select {
		case <-r.stop:
			return
		case <-gap.C:
		}
	}
}

// retentionGap is the least time between two runs of the loop.
const retentionGap = 250 * time.Millisecond

// recordingFiles is one recording's files as a run sees them.
type recordingFiles struct {
	id      string
	started time.Time
	size    int64
	names   []string
}

// Run applies the limits once, looking at every file in the directory,
// and returns the ids it deleted.
func (r *Retention) Run() ([]string, error) { return r.run(false) }

// run is Run; with useKnown, the files of ended recordings that the last
// run saw are taken as they were then (known) rather than looked at again:
// one lstat per new file instead of one per file, which in a directory of
// 10,000 recordings is most of a run's cost.
func (r *Retention) run(useKnown bool) ([]string, error) {
	if r.maxAge <= 0 && r.maxTotal <= 0 {
		return nil, nil
	}
	r.runMu.Lock()
	defer r.runMu.Unlock()
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		r.known = nil
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("retention: %w", err)
	}
	// Taken before any file is looked at: a recording that is not live
	// now has written, synced and closed its files for good.
	liveIDs := liveIn(r.dir)
	known := make(map[string]fileFacts, len(entries))
	byID := make(map[string]*recordingFiles)
	for _, e := range entries {
		name := e.Name()
		id, _, ok := splitName(name)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		facts, seen := r.known[name]
		if !useKnown || !seen || liveIDs[id] {
			info, err := e.Info()
			if err != nil {
				continue // deleted meanwhile
			}
			facts = fileFacts{size: info.Size(), modTime: info.ModTime()}
		}
		if !liveIDs[id] {
			known[name] = facts
		}
		rf := byID[id]
		if rf == nil {
			rf = &recordingFiles{id: id, started: idTime(id, facts.modTime)}
			byID[id] = rf
		}
		if facts.modTime.Before(rf.started) {
			rf.started = facts.modTime
		}
		rf.size += facts.size
		rf.names = append(rf.names, name)
	}
	all := make([]*recordingFiles, 0, len(byID))
	var total int64
	for _, rf := range byID {
		all = append(all, rf)
		total += rf.size
	}
	slices.SortFunc(all, func(a, b *recordingFiles) int {
		if c := a.started.Compare(b.started); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})

	var deleted []string
	var errs []error
	now := r.now()
	for _, rf := range all {
		old := r.maxAge > 0 && now.Sub(rf.started) > r.maxAge
		over := r.maxTotal > 0 && total > r.maxTotal
		if !old && !over {
			continue
		}
		if isLive(r.dir, rf.id) {
			continue
		}
		if err := r.remove(rf); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, name := range rf.names {
			delete(known, name)
		}
		total -= rf.size
		deleted = append(deleted, rf.id)
	}
	r.known = known
	return deleted, errors.Join(errs...)
}

// remove deletes a recording's files, the sidecar first, so that a
// recording that is listed still has its stream.
func (r *Retention) remove(rf *recordingFiles) error {
	slices.SortFunc(rf.names, func(a, b string) int {
		return boolInt(!strings.HasSuffix(a, ".json")) - boolInt(!strings.HasSuffix(b, ".json"))
	})
	for _, name := range rf.names {
		if err := os.Remove(filepath.Join(r.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("retention: deleting %s: %w", name, err)
		}
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// idTime is the start time in a recorder's id, or fallback for an id of
// another shape.
func idTime(id string, fallback time.Time) time.Time {
	if len(id) >= len(idTimeLayout) {
		if t, err := time.Parse(idTimeLayout, id[:len(idTimeLayout)]); err == nil {
			return t
		}
	}
	return fallback
}
