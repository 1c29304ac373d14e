package console

import (
	"errors"
	"fmt"
	"time"

	"github.com/gorilla/websocket"
)

// DefaultPingInterval is ping_interval's default, and the pace of the
// stall checks of sessions without pings (ping_interval 0).
const DefaultPingInterval = 30 * time.Second

// writeControlLocked sends a control frame (payload at most 125 bytes);
// the caller holds bc.mu, so the frame goes after any data frame being
// written. Nothing follows a close frame.
func (s *Session) writeControlLocked(messageType int, payload []byte, deadline time.Time) error {
	frame := make([]byte, 2, 2+len(payload))
	frame[0], frame[1] = 0x80|byte(messageType), byte(len(payload))
	frame = append(frame, payload...)
	return s.bc.writeLocked(nil, messageType == websocket.CloseMessage, func() error {
		_ = s.browser.SetWriteDeadline(deadline)
		n, err := s.browser.Write(frame)
		s.controlSent.Add(int64(n))
		// Data writes must not inherit the deadline.
		_ = s.browser.SetWriteDeadline(time.Time{})
		return err
	})
}

// errWriteBusy: a ping or pong was not sent because a data frame was being
// written, which keeps the connection alive by itself.
var errWriteBusy = errors.New("a data frame is being written")

// tryWriteControl sends a ping or a pong unless a data frame is being
// written: they must not wait behind a browser that does not read. The
// write itself counts as one in progress for the stall check.
func (s *Session) tryWriteControl(messageType int, data []byte, timeout time.Duration) error {
	if !s.bc.mu.TryLock() {
		return errWriteBusy
	}
	defer s.bc.mu.Unlock()
	s.toBrowserBusy.Store(true)
	defer s.toBrowserBusy.Store(false)
	return s.writeControlLocked(messageType, data, time.Now().Add(timeout))
}

// tick runs every ping interval (every DefaultPingInterval when pings are
// off): it ends a session whose writes make no progress, and pings the
// browser.
func (s *Session) tick() {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	now := time.Now()
	// Bytes wait for the browser while a write to it is under way, and
	// also while its socket holds bytes it has not taken: the pump may
	// be waiting for the VNC server meanwhile. Its progress counts every
	// byte it takes, not only whole frames, which a slow reader takes
	// seconds over.
	moved := s.browserProgress()
	waiting := s.toBrowserBusy.Load()
	if left, ok := s.bc.unsent(); ok && left > 0 {
		waiting = true
	}
	toBrowser := s.browserStall.stalled(waiting, moved, now, s.stallBound())
	sent, sending := s.toTarget.Load(), s.toTargetBusy.Load()
	toTarget := s.targetStall.stalled(sending, sent, now, s.stallBound())
	// The browser is alive while it sends something (data, pongs, pings)
	// or takes what is written to it: a browser busy receiving a stream
	// need not answer pings, which wait for no data frame. Its bytes
	// relayed to the VNC server count as heard, as a message's start
	// does; and while one is being written there, its pongs wait unread
	// behind it, so silence cannot be told (the VNC server's stall check
	// bounds that write).
	if moved > s.progressSeen {
		s.progressSeen, s.progressAt = moved, now
	}
	if sent != s.sentSeen || sending {
		s.sentSeen, s.sentAt = sent, now
	}
	alive := time.Unix(0, s.heard.Load())
	for _, at := range []time.Time{s.progressAt, s.sentAt} {
		if at.After(alive) {
			alive = at
		}
	}
	silent := s.pingInterval > 0 && now.Sub(alive) >= 2*s.pingInterval
	s.writers.Add(1)
	s.mu.Unlock()
	defer s.writers.Done()
	switch {
	case toBrowser:
		// It cannot take a close frame either.
		s.end(reasonBrowserStalled, 0, "", fmt.Errorf("no bytes written to the browser for %v", now.Sub(s.browserStall.since).Round(time.Millisecond)))
		return
	case toTarget:
		s.end(reasonTargetStalled, websocket.CloseNormalClosure, "VNC server not responding", fmt.Errorf("no bytes written to the vnc server for %v", now.Sub(s.targetStall.since).Round(time.Millisecond)))
		return
	case silent:
		s.end(reasonPingTimeout, 0, "", fmt.Errorf("nothing from the browser and nothing taken by it for %v", now.Sub(alive).Round(time.Millisecond)))
		return
	}
	if s.pingInterval > 0 {
		// A ping waits for no data frame: moving data keeps the connection
		// alive, and a browser that stops reading misses the pongs it would
		// owe, so the read deadline ends its session.
		if err := s.tryWriteControl(websocket.PingMessage, nil, 2*s.tickInterval()); err != nil && !errors.Is(err, errWriteBusy) {
			s.endOnControlError(err, "writing a ping")
			return
		}
	}
	s.mu.Lock()
	if !s.ended {
		s.pingTimer.Reset(s.tickInterval())
	}
	s.mu.Unlock()
}

func (s *Session) tickInterval() time.Duration {
	if s.pingInterval > 0 {
		return s.pingInterval
	}
	return DefaultPingInterval
}

// stallCheck tells a direction whose write has made no progress for the
// stall bound: a write is under way (or bytes wait) at each tick, and the
// byte count has not risen above the highest seen since the tick that saw
// it last rise. It reckons in time, not in ticks, so that ticks a busy
// machine runs late do not stretch the bound by whole intervals.
type stallCheck struct {
	seen  int64
	since time.Time // the tick that last saw progress, or no write
}

func (c *stallCheck) stalled(busy bool, moved int64, now time.Time, bound time.Duration) bool {
	if !busy || moved > c.seen || c.since.IsZero() {
		c.seen, c.since = max(c.seen, moved), now
		return false
	}
	return now.Sub(c.since) >= bound
}

// checkIdle ends the session when no bytes moved for idleTimeout.
func (s *Session) checkIdle() {
	now := time.Now()
	moved := s.toBrowser.Load() + s.toTarget.Load()
	if s.spice != nil {
		// A SPICE console is idle when none of its channels moves.
		toBrowser, toTarget, _ := s.spice.console.totals()
		moved = toBrowser + toTarget
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	if moved != s.idleSeen {
		s.idleSeen, s.lastActive = moved, now
	}
	idle := now.Sub(s.lastActive) >= s.idleTimeout
	if !idle {
		s.idleTimer.Reset(s.idleCheckInterval())
	}
	s.mu.Unlock()
	if idle {
		s.end(reasonIdleTimeout, websocket.CloseNormalClosure, "idle timeout", nil)
	}
}

// idleCheckInterval: an idle session ends between idleTimeout and
// 1.25 × idleTimeout after its last byte.
func (s *Session) idleCheckInterval() time.Duration {
	return max(s.idleTimeout/4, 10*time.Millisecond)
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}
