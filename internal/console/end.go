package console

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
)

// CloseGrace is how long a session waits for the browser to answer its
// close frame before it drops the connection.
const CloseGrace = time.Second

// endOnControlError ends a session whose ping or pong could not be
// written: the frame may have been cut short, so the stream is lost. A
// write that took two intervals is a browser that stopped reading, as for
// data frames.
func (s *Session) endOnControlError(err error, what string) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		s.end(reasonBrowserStalled, 0, "", fmt.Errorf("%s: %w", what, err))
		return
	}
	s.end(reasonBrowserGone, 0, "", fmt.Errorf("%s: %w", what, err))
}

func (s *Session) endOnBrowserError(err error) {
	var ce *websocket.CloseError
	switch {
	case errors.Is(err, websocket.ErrReadLimit) && s.bc.closeSent.Load():
		// gorilla has sent close 1009 already.
		s.end(reasonTooBig, 0, "", nil)
	case errors.Is(err, websocket.ErrReadLimit):
		// A frame length with the top bit set, which gorilla refuses
		// without a close frame (RFC 6455 5.2: the bit must be 0).
		s.end(reasonProtocolError, websocket.CloseProtocolError, "invalid frame length", err)
	case errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure:
		// Echo the browser's close (RFC 6455 5.5.1), after the frame in
		// flight; a close without a code gets one without a code.
		s.end(reasonBrowserClosed, ce.Code, "", nil)
	default:
		s.end(reasonBrowserGone, 0, "", err)
	}
}

// end ends the session once: it records why, sends the browser a close
// frame with code (none when code is 0), and closes the VNC server's
// connection, which ends pumpToBrowser. The close frame waits for the data
// frame being written, as long as the browser keeps taking its bytes
// (stallBound); the browser then gets CloseGrace to answer once it has
// taken everything, and longer while it is still reading the bytes queued
// before the close frame, before its connection is dropped. On shutdown
// (close 1001) each of these waits is CloseGrace at most. Without a close
// frame (from end, or from gorilla on a protocol error) the connection is
// dropped at once. Either way both pumps return promptly, and the last one
// closes the browser's connection (pumpDone).
func (s *Session) end(reason string, code int, text string, err error) {
	reason, code, text = s.spiceEndAs(reason, code, text)
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	s.reason = reason
	s.endErr = err
	s.closeStall = s.stallBound()
	if code == websocket.CloseGoingAway {
		s.closeStall = CloseGrace
	}
	stopTimer(s.pingTimer)
	stopTimer(s.idleTimer)
	stopTimer(s.endTimer)
	s.writers.Add(1)
	s.mu.Unlock()
	defer s.writers.Done()

	s.spiceEnded(reason, code, text, err)
	s.stopTarget()
	if code != 0 {
		// The close frame goes after the data frame being written.
		if code == websocket.CloseGoingAway {
			// Shutting down: that frame gets CloseGrace, no more.
			_ = s.browser.SetWriteDeadline(time.Now().Add(CloseGrace))
			s.bc.mu.Lock()
		} else {
			s.lockAfterFrameInFlight()
		}
		werr := s.side.writeClose(s, code, text, time.Now().Add(CloseGrace))
		s.bc.mu.Unlock()
		if werr != nil {
			s.bc.abort()
			return
		}
	}
	if !s.bc.closeSent.Load() {
		// No close frame (the browser is gone or stalled): drop it.
		s.bc.abort()
		return
	}
	// The browser's answer ends pumpToTarget; one that does not answer is
	// dropped (closeWait).
	s.mu.Lock()
	s.closeSeen = s.browserProgress()
	s.closeMoved = time.Now()
	s.closeTimer = time.AfterFunc(CloseGrace, s.closeWait)
	s.mu.Unlock()
}

// stallBound is how long a browser may take nothing while bytes wait for
// it: two tick intervals, the bound of the stall check (tick). The waits of
// a session's end use it too, so that a browser that reads slowly, or
// whose reader is late on a busy machine, loses nothing at the end that it
// would not lose while the console streams.
func (s *Session) stallBound() time.Duration { return 2 * s.tickInterval() }

// browserProgress is a count that grows whenever the browser takes bytes
// of data: for a socket, the bytes its end acknowledged, which move inside
// a large frame too, less the control frames written to it, so that a
// browser whose kernel acknowledges pings it never reads makes none (one
// written and not yet acknowledged lowers the count for a while, so
// progress is a count above the highest seen before). Frames handed to a
// socket are no measure of it: the socket's own buffer takes megabytes
// while the browser takes nothing. Elsewhere (a stream), whole frames
// handed to the connection.
func (s *Session) browserProgress() int64 {
	if taken, ok := s.bc.taken(); ok {
		return taken - s.controlSent.Load()
	}
	return s.toBrowser.Load()
}

// lockAfterFrameInFlight takes the write lock once the data frame being
// written is done, waiting as long as the browser keeps taking bytes (the
// VNC server's side is closed, so what is left is finite); a browser that
// takes nothing for the stall bound has the write cut short. The lock is
// taken by a goroutine of its own, so the wait ends the moment the frame
// does; the browser's progress is looked at once per tick interval, as the
// stall check does.
func (s *Session) lockAfterFrameInFlight() {
	if s.bc.mu.TryLock() {
		return
	}
	locked := make(chan struct{})
	go func() {
		s.bc.mu.Lock()
		close(locked)
	}()
	bound, every := s.stallBound(), s.tickInterval()
	seen, moved := s.browserProgress(), time.Now()
	// What remains of the frame tells progress inside it where the
	// browser's acknowledgements cannot be read (a stream).
	left, _ := s.bc.unsent()
	look := time.NewTimer(every)
	defer look.Stop()
	for {
		select {
		case <-locked:
			return
		case <-look.C:
		}
		p := s.browserProgress()
		now, _ := s.bc.unsent()
		if p > seen || now < left {
			seen, moved = max(seen, p), time.Now()
		} else if time.Since(moved) >= bound {
			// Cut the write short: the writer returns and lets go of the
			// lock, and nothing may follow the frame it cut.
			_ = s.browser.SetWriteDeadline(time.Now())
			<-locked
			return
		}
		left = now
		look.Reset(every)
	}
}

// closeWait runs CloseGrace after the close frame, and again while the
// browser still takes the bytes queued before it: a browser on a slow link,
// or one whose reader a busy machine holds up, reading a backlog must not
// lose its tail to the reset. One that has taken everything (the close
// frame included) and not answered, or that takes nothing for the stall
// bound, is dropped.
func (s *Session) closeWait() {
	s.mu.Lock()
	defer s.mu.Unlock()
	left, ok := s.bc.unsent()
	if ok && left > 0 {
		if p := s.browserProgress(); p > s.closeSeen {
			s.closeSeen, s.closeMoved = p, time.Now()
		}
		if time.Since(s.closeMoved) < s.closeStall {
			s.closeTimer.Reset(CloseGrace)
			return
		}
	}
	s.bc.giveUp()
}

// recoverPanic ends the session with close code 1011 if its pump panics,
// so that one broken session cannot take the process down.
func (s *Session) recoverPanic() {
	v := recover()
	if v == nil {
		return
	}
	s.logger.Error("session failed", zap.String("session", s.id), zap.Any("panic", v), zap.Stack("stack"))
	s.end(reasonInternal, websocket.CloseInternalServerErr, "internal error", fmt.Errorf("panic: %v", v))
}

// pumpDone is called by each pump as it returns; the last one closes what
// is left, unregisters the session and logs its end.
func (s *Session) pumpDone() {
	if s.pumps.Add(-1) != 0 {
		return
	}
	s.mu.Lock()
	stopTimer(s.closeTimer)
	reason, err, stall := s.reason, s.endErr, s.closeStall
	s.mu.Unlock()
	s.closeTarget()
	s.writers.Wait()
	if s.bc.closeSent.Load() {
		// After a close frame, or a write that failed (then lingerClose
		// finds the connection closed already).
		s.bc.lingerClose(CloseGrace, stall)
	} else {
		s.browser.Close()
	}
	s.endRecording(reason)
	Sessions.remove(s)
	if s.spice != nil {
		s.spiceFinished(reason, err)
		close(s.done)
		return
	}
	if s.release != nil {
		s.release()
	}

	duration := time.Since(s.started)
	s.metrics.Duration.Observe(duration.Seconds())
	fields := []zap.Field{
		zap.String("session", s.id),
		zap.String("client", s.client),
		zap.String("target", s.targetAddr),
		zap.String("token_hash", s.tokenHash),
		zap.Int64("bytes_to_browser", s.toBrowser.Load()),
		zap.Int64("bytes_to_target", s.toTarget.Load()),
		zap.Duration("duration", duration),
		zap.String("reason", reason),
	}
	if s.filter != nil && s.filter.ViewOnly {
		fields = append(fields, zap.Int64("dropped_input", s.filter.Dropped))
	}
	if s.serverFilter != nil {
		fields = append(fields, zap.Int64("clipboard_dropped", s.clipboardDropped()))
	}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	s.logger.Info("session ended", fields...)
	close(s.done)
}

// isEnded reports whether the session is ending or has ended.
func (s *Session) isEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}
