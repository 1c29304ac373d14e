package admission

import (
	"errors"
	"sync"
)

// State is what a handler (or a native listener) keeps across config
// reloads: its console counts, in all and per token, and its failed-token
// table. The pipeline of the config that takes over the handler's place
// gets the same State, so that the consoles of the old config still count
// and a client over its failed-token rate stays over it.
type State struct {
	counts       consoleCount
	failedTokens *failedTokens
}

// NewState returns an empty state.
func NewState() *State {
	return &State{
		counts:       consoleCount{perToken: make(map[string]int)},
		failedTokens: newFailedTokens(),
	}
}

func (s *State) setFailedTokenRate(r Rate) error { return s.failedTokens.setRate(r) }

// Consoles is how many consoles the state counts: live, or being opened.
func (s *State) Consoles() int {
	s.counts.mu.Lock()
	defer s.counts.mu.Unlock()
	return s.counts.total
}

// consoleCount counts the consoles of one handler, live or being opened,
// in all and per token.
type consoleCount struct {
	mu       sync.Mutex
	total    int
	perToken map[string]int // by token hash
}

// Why reserve refused a console.
var (
	errTooManyConsoles         = errors.New("max_sessions reached")
	errTooManyConsolesForToken = errors.New("max_sessions_per_token reached")
)

// reserve counts a console for tokenHash unless that would exceed
// maxPerToken or max (0: no limit); release uncounts it, once.
func (c *consoleCount) reserve(tokenHash string, max, maxPerToken int) (release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if maxPerToken > 0 && c.perToken[tokenHash] >= maxPerToken {
		return nil, errTooManyConsolesForToken
	}
	if max > 0 && c.total >= max {
		return nil, errTooManyConsoles
	}
	c.total++
	c.perToken[tokenHash]++
	var once sync.Once
	return func() { once.Do(func() { c.unreserve(tokenHash) }) }, nil
}

func (c *consoleCount) unreserve(tokenHash string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.perToken[tokenHash]--; c.perToken[tokenHash] <= 0 {
		delete(c.perToken, tokenHash)
	}
}
