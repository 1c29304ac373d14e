package console

import (
	"errors"
	"io"

	"github.com/gorilla/websocket"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfbframe"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbproxy"
)

// Why a console with filtered streams ended, as logged.
const (
	reasonCannotFrame    = "vnc server stream cannot be framed"
	reasonClientRefused  = "message refused"
	closeTextCannotFrame = "VNC server sent a message the proxy cannot frame"
)

// pumpFramedToBrowser relays the VNC server's bytes to the client of a
// console with a clipboard policy, through its server filter: every read
// is framed, what may pass goes out as one message, and a header cut by
// the read waits for the next one. A message the filter cannot frame ends
// the console with close 1011: the client never gets a misframed stream.
// Like pumpToBrowser it takes a buffer only once the server's bytes are
// there, except while a cut header waits for the rest of it.
func (s *Session) pumpFramedToBrowser() {
	buffers := s.serverBuffers()
	read := pooledReader(s.target, buffers)
	var carry [rfbproxy.MaxServerCarry]byte
	carried := 0
	for {
		var (
			bp   *[]byte
			n    int
			rerr error
		)
		if carried == 0 {
			bp, n, rerr = read()
		} else {
			bp = buffers.Get().(*[]byte)
			copy((*bp)[frameHeaderRoom:], carry[:carried])
			n, rerr = s.target.Read((*bp)[frameHeaderRoom+carried:])
			if n > 0 {
				n += carried
			}
		}
		if n > 0 {
			rest, err := s.forwardFramed(*bp, n)
			if err != nil {
				buffers.Put(bp)
				return
			}
			carried = copy(carry[:], rest)
		}
		if bp != nil {
			buffers.Put(bp)
		}
		if errors.Is(rerr, io.EOF) {
			s.end(reasonTargetClosed, websocket.CloseNormalClosure, "VNC server closed the connection", nil)
			return
		}
		if rerr != nil {
			s.end(reasonTargetReadErr, websocket.CloseNormalClosure, "VNC server closed the connection", rerr)
			return
		}
	}
}

// forwardFramed filters buf[frameHeaderRoom:frameHeaderRoom+n], the
// server's next bytes, and sends what passes. It returns the bytes left
// for the next read (a cut header, fewer than rfbproxy.MaxServerCarry),
// or an error once it has ended the session.
func (s *Session) forwardFramed(buf []byte, n int) ([]byte, error) {
	base, end := frameHeaderRoom, frameHeaderRoom+n
	for base < end {
		kept, used, ferr := s.serverFilter.Filter(buf[base:end])
		if kept > 0 {
			if !s.recordServer(buf[base : base+kept]) {
				return nil, errNotRecorded
			}
			// The room in front of base held bytes already sent or
			// dropped.
			if err := s.writeData(buf[base-frameHeaderRoom:], kept); err != nil {
				s.end(reasonBrowserGone, 0, "", err)
				return nil, err
			}
			s.countToBrowser(kept)
		}
		if h := s.serverFilter.Held(); h != nil {
			if !s.recordServer(h) {
				return nil, errNotRecorded
			}
			msg := make([]byte, frameHeaderRoom+len(h))
			copy(msg[frameHeaderRoom:], h)
			if err := s.writeData(msg, len(h)); err != nil {
				s.end(reasonBrowserGone, 0, "", err)
				return nil, err
			}
			s.countToBrowser(len(h))
		}
		if ferr != nil {
			s.end(reasonCannotFrame, websocket.CloseInternalServerErr, closeTextCannotFrame, ferr)
			return nil, ferr
		}
		if used == 0 {
			break
		}
		base += used
	}
	return buf[base:end], nil
}

// endOnFilterError ends the session whose client sent what its filter
// refuses.
func (s *Session) endOnFilterError(err error) {
	switch {
	case errors.Is(err, rfbframe.ErrCannotFrame), errors.Is(err, rfbframe.ErrMalformed):
		// A pixel format or an offer the server's framer cannot follow.
		s.end(reasonCannotFrame, websocket.CloseInternalServerErr, closeTextCannotFrame, err)
	case s.filter.ViewOnly:
		s.end(reasonRefusedMessage, websocket.ClosePolicyViolation, "message not allowed on a view-only console", err)
	default:
		s.end(reasonClientRefused, websocket.ClosePolicyViolation, "message not allowed on this console", err)
	}
}

// clipboardDropped counts the clipboard messages the console's filters
// dropped, both ways.
func (s *Session) clipboardDropped() int64 {
	return s.filter.ClipboardDropped.Load() + s.serverFilter.Dropped.Load()
}

// ClipboardDropped is how many clipboard messages the console's clipboard
// policy dropped so far, both ways; 0 for a console without one.
func (s *Session) ClipboardDropped() int64 {
	if s.serverFilter == nil {
		return 0
	}
	return s.clipboardDropped()
}
