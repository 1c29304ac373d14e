package console

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/internal/recording"
)

// Record is how a console is recorded (internal/recording). Only an
// RFB-aware console (Config.Login set) is recorded: the recording is the
// stream the client gets from the proxy, which offered it security None,
// so it replays without credentials.
type Record struct {
	// Config is the recordings' directory, whether input is kept, and
	// the retention to tell when a recording has finished. Its OnError is
	// the session's own.
	recording.Config
	// ContinueOnError: a recording that fails is logged, once, and the
	// console goes on unrecorded (on_error continue). Otherwise the
	// console ends with close 1011 "recording failed" (on_error end), and
	// the bytes that could not be recorded are not sent.
	ContinueOnError bool
}

// reasonRecordingFailed is why a console whose recording failed ended, as
// logged and as the close frame's text.
const reasonRecordingFailed = "recording failed"

// recordingFinishBound is how long a session's end waits for its
// recording to be on disk (and its sidecar complete); a slower disk
// finishes it in the background.
const recordingFinishBound = CloseGrace

// sessionRecording is a session's recording and what became of it.
type sessionRecording struct {
	s    *Session
	rec  *recording.Recording
	cont bool
	// failed: the recording failed and the failure was handled; nothing
	// more is recorded.
	failed atomic.Bool
}

// startRecording starts the session's recording, with the proxy's
// handshake as its first bytes, before the session is registered. A
// recording that cannot start is a failed one: the returned function, run
// once the session runs, handles that (nil when there is nothing to
// handle).
func (s *Session) startRecording(c *Record) (failed func()) {
	if c == nil || s.login == nil {
		return nil
	}
	r := &sessionRecording{s: s, cont: c.ContinueOnError}
	cfg := c.Config
	cfg.OnError = r.fail
	rec, err := recording.Start(cfg, recording.Meta{Session: s.id, TokenHash: s.tokenHash, Target: s.targetAddr})
	if err != nil {
		return func() { r.fail(err) }
	}
	r.rec = rec
	s.rec = r
	// The ServerInit comes from the VNC server, through pumpToBrowser.
	if err := rec.Server(recording.Handshake(nil)); err != nil {
		return func() { r.fail(err) }
	}
	return nil
}

// fail handles the recording's first failure by the on_error policy. It is
// called from the relay's goroutines and from the recording's writer.
func (r *sessionRecording) fail(err error) {
	if !r.failed.CompareAndSwap(false, true) {
		return
	}
	if c := r.s.metrics.RecordingFailures; c != nil {
		c.Inc()
	}
	if r.cont {
		fields := []zap.Field{zap.String("session", r.s.id), zap.Error(err)}
		if r.rec != nil {
			fields = append(fields, zap.String("recording", r.rec.ID()))
		}
		r.s.logger.Warn("recording failed, the console goes on unrecorded", fields...)
		return
	}
	r.s.end(reasonRecordingFailed, websocket.CloseInternalServerErr, reasonRecordingFailed, err)
}

// recordServer records bytes on their way to the client. False: they
// must not be sent (the recording failed and the console ends).
func (s *Session) recordServer(p []byte) bool {
	r := s.rec
	if r == nil || r.failed.Load() {
		return r == nil || r.cont
	}
	if err := r.rec.Server(p); err != nil {
		r.fail(err)
		return r.cont
	}
	return true
}

// errNotRecorded: the client's bytes were not sent, since their recording
// failed and the console ends.
var errNotRecorded = errors.New("not sent: the recording failed")

// recordClient records the client's bytes on their way to the VNC server
// (the stream after ClientInit). An error: they must not be sent.
func (s *Session) recordClient(p []byte) error {
	r := s.rec
	if r == nil || r.failed.Load() {
		if r == nil || r.cont {
			return nil
		}
		return errNotRecorded
	}
	if err := r.rec.Client(p); err != nil {
		r.fail(err)
		if !r.cont {
			return errNotRecorded
		}
	}
	return nil
}

// endRecording ends the session's recording for the session's reason and
// waits, at most recordingFinishBound, for it to be on disk.
func (s *Session) endRecording(reason string) {
	r := s.rec
	if r == nil {
		return
	}
	r.rec.End(reason)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A failure that was handled has been logged already.
		if err := r.rec.Wait(); err != nil && !r.failed.Load() {
			s.logger.Warn("recording incomplete", zap.String("session", s.id), zap.String("recording", r.rec.ID()), zap.Error(err))
		}
	}()
	t := time.NewTimer(recordingFinishBound)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}
