package console

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// registry holds the live sessions of the process. Sessions outlive the
// configs that started them, so the registry is the process's: on exit,
// every session, whichever config started it, gets its close frame.
type registry struct {
	mu sync.Mutex
	m  map[*Session]struct{}
}

// Sessions are the live sessions of the process.
var Sessions = &registry{m: make(map[*Session]struct{})}

func (r *registry) add(s *Session) {
	r.mu.Lock()
	r.m[s] = struct{}{}
	r.mu.Unlock()
	if s.Listed() {
		s.metrics.Active.Inc()
	}
}

func (r *registry) remove(s *Session) {
	r.mu.Lock()
	delete(r.m, s)
	r.mu.Unlock()
	if s.Listed() {
		s.metrics.Active.Dec()
	}
}

// Len is how many sessions are live, each channel of a SPICE console
// counted.
func (r *registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

func (r *registry) snapshot() []*Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	live := make([]*Session, 0, len(r.m))
	for s := range r.m {
		live = append(live, s)
	}
	return live
}

// CloseAll ends every live session with the close code and waits, at
// most a few seconds, for them to finish.
func (r *registry) CloseAll(code int, text string) {
	live := r.snapshot()
	// In parallel: a session whose browser does not read holds its end
	// for up to CloseGrace, and must not hold up the others.
	var ending sync.WaitGroup
	for _, s := range live {
		ending.Go(func() { s.end(reasonShutdown, code, text, nil) })
	}
	ending.Wait()
	deadline := time.After(CloseGrace + time.Second)
	for _, s := range live {
		select {
		case <-s.done:
		case <-deadline:
			return
		}
	}
}

// EndMatching ends the live sessions match selects, with close code 1008
// and reason as the close frame's text and the logged reason, and returns
// how many it ended.
func (r *registry) EndMatching(match func(*Session) bool, reason string) int {
	n := 0
	var ending sync.WaitGroup
	for _, s := range r.snapshot() {
		if !s.Listed() || !match(s) || s.isEnded() {
			continue
		}
		n++
		ending.Go(func() { s.end(reason, websocket.ClosePolicyViolation, reason, nil) })
	}
	ending.Wait()
	return n
}

// Find returns the live session with this id, or nil.
func (r *registry) Find(id string) *Session {
	for _, s := range r.snapshot() {
		if s.id == id && s.Listed() && !s.isEnded() {
			return s
		}
	}
	return nil
}

// List describes every live session, oldest first.
func (r *registry) List() []Info {
	live := r.snapshot()
	out := make([]Info, 0, len(live))
	for _, s := range live {
		if s.Listed() && !s.isEnded() {
			out = append(out, s.Info())
		}
	}
	slices.SortFunc(out, func(a, b Info) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Info is what the admin API shows of a session: never its token or a
// VNC password.
type Info struct {
	ID             string     `json:"id"`
	Server         string     `json:"server"`
	Transport      string     `json:"transport"`
	Client         string     `json:"client"`
	Target         string     `json:"target"`
	TokenHash      string     `json:"token_hash"`
	Started        time.Time  `json:"started"`
	BytesToBrowser int64      `json:"bytes_to_browser"`
	BytesToTarget  int64      `json:"bytes_to_target"`
	ViewOnly       bool       `json:"view_only"`
	ExpiresAt      *time.Time `json:"expires_at"`
	// Channels is a SPICE console's live channels, the main one included;
	// 0 (left out) for other consoles.
	Channels int `json:"channels,omitempty"`
	// Recording is the id of the console's recording, if it is recorded.
	Recording string `json:"recording,omitempty"`
}

// Info describes the session.
func (s *Session) Info() Info {
	i := Info{
		ID:             s.id,
		Server:         s.server,
		Transport:      s.transport,
		Client:         s.client,
		Target:         s.targetAddr,
		TokenHash:      s.tokenHash,
		Started:        s.started.UTC().Truncate(time.Millisecond),
		BytesToBrowser: s.toBrowser.Load(),
		BytesToTarget:  s.toTarget.Load(),
		ViewOnly:       s.filter != nil,
	}
	if s.rec != nil {
		i.Recording = s.rec.rec.ID()
	}
	if !s.expiresAt.IsZero() {
		at := s.expiresAt.UTC()
		i.ExpiresAt = &at
	}
	if s.spice != nil {
		i.BytesToBrowser, i.BytesToTarget, i.Channels = s.spice.console.totals()
	}
	return i
}
