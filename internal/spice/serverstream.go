package spice

import (
	"encoding/binary"
	"fmt"
)

// What ServerStream is reading.
const (
	serverHeader  = iota // SpiceLinkHeader
	serverReply          // SpiceLinkReply
	serverResult         // the u32 link result after the ticket
	serverMsgHead        // a main channel message header
	serverMsgBody        // a main channel message body
	serverStart          // a display channel before the server's first byte
	serverDone           // nothing more to see
)

// Bounds on what the main channel may send before MAIN_INIT. spice-server
// sends it first; a few messages of slack keep a server that sends a
// notification or a ping first working, and no more.
const (
	maxMessagesBeforeInit = 8
	maxBytesBeforeInit    = 64 << 10
	// mainInitSize is SpiceMsgMainInit: eight u32 fields.
	mainInitSize = 32
)

// ServerStream follows the server's side of one channel: its
// SpiceLinkHeader and SpiceLinkReply, the link result after the ticket and,
// on the main channel, the messages up to MAIN_INIT, whose first field is
// the session id, and on a display channel whether the server has started
// it. It never changes nor holds the bytes: the caller forwards
// them as they are. Make one with NewServerStream.
type ServerStream struct {
	main       bool
	miniHeader bool
	state      int
	n          uint32 // bytes of the current field read so far
	size       uint32 // reply size, or message body size
	typ        uint16 // current message type
	field      [DataHeaderSize]byte
	messages   int    // messages seen before MAIN_INIT
	bytes      uint32 // their bytes
	session    uint32
	hasSession bool
	display    bool
	started    bool
	err        error
}

// NewServerStream returns a ServerStream for the server's side of the
// channel the client linked with l (the channel type and mini header
// decide what follows the link).
func NewServerStream(l Link) ServerStream {
	return ServerStream{main: l.Channel == ChannelMain, display: l.Channel == ChannelDisplay, miniHeader: l.MiniHeader}
}

// SessionID returns the session id from MAIN_INIT, once the main channel's
// server sent it.
func (s *ServerStream) SessionID() (uint32, bool) { return s.session, s.hasSession }

// Linked reports whether the server accepted the link (its link result was
// OK).
func (s *ServerStream) Linked() bool { return s.state >= serverMsgHead }

// DisplayStarted reports whether the server has sent a byte on a display
// channel after the link result: spice-server sends nothing there before it
// has handled the client's DISPLAY_INIT, and from then on closing the
// channel is safe (see ClientStream).
func (s *ServerStream) DisplayStarted() bool { return s.started }

// Done reports whether the stream needs no more looking at: the session id
// is known on the main channel, the display channel has started, the link
// is accepted on the others.
func (s *ServerStream) Done() bool { return s.state == serverDone }

// Feed reads p as the next bytes from the server. An error is final: it
// wraps ErrBadReply for a reply that is not SPICE, is a *LinkError when the
// server refused the link, or wraps ErrBadMessage for a main channel that
// does not send a valid MAIN_INIT first.
func (s *ServerStream) Feed(p []byte) error {
	if s.err != nil {
		return s.err
	}
	for len(p) > 0 && s.state != serverDone {
		switch s.state {
		case serverHeader:
			k := min(LinkHeaderSize-int(s.n), len(p))
			for i := range k {
				// The magic is checked byte by byte: a target that is not
				// SPICE is told apart by its first byte.
				if at := int(s.n) + i; at < 4 && p[i] != Magic[at] {
					s.err = fmt.Errorf("%w: magic is not %q (byte %d is %#02x)", ErrBadReply, Magic, at, p[i])
					return s.err
				}
			}
			copy(s.field[s.n:], p[:k])
			s.n += uint32(k)
			p = p[k:]
			if s.n < LinkHeaderSize {
				continue
			}
			if major := binary.LittleEndian.Uint32(s.field[4:]); major != VersionMajor {
				s.err = fmt.Errorf("%w: major version %d, want %d", ErrBadReply, major, VersionMajor)
				return s.err
			}
			s.size = binary.LittleEndian.Uint32(s.field[12:])
			if s.size < linkReplyFixed || s.size > MaxLinkSize {
				s.err = fmt.Errorf("%w: link reply size %d outside %d..%d", ErrBadReply, s.size, linkReplyFixed, MaxLinkSize)
				return s.err
			}
			s.n = 0
			s.state = serverReply
		case serverReply:
			// Only the error field matters; the key and capabilities are
			// for the client.
			k := min(int(s.size-s.n), len(p))
			if s.n < 4 {
				copy(s.field[s.n:4], p[:k])
			}
			s.n += uint32(k)
			p = p[k:]
			if s.n >= 4 {
				if code := binary.LittleEndian.Uint32(s.field[:4]); code != LinkOK {
					s.err = &LinkError{Code: code}
					return s.err
				}
			}
			if s.n == s.size {
				s.n = 0
				s.state = serverResult
			}
		case serverResult:
			k := min(4-int(s.n), len(p))
			copy(s.field[s.n:], p[:k])
			s.n += uint32(k)
			p = p[k:]
			if s.n < 4 {
				continue
			}
			if code := binary.LittleEndian.Uint32(s.field[:4]); code != LinkOK {
				s.err = &LinkError{Code: code}
				return s.err
			}
			s.n = 0
			switch {
			case s.main:
				s.state = serverMsgHead
			case s.display:
				s.state = serverStart
			default:
				s.state = serverDone
			}
		case serverStart:
			s.started = true
			s.state = serverDone
		case serverMsgHead:
			hs := MiniHeaderSize
			if !s.miniHeader {
				hs = DataHeaderSize
			}
			k := min(hs-int(s.n), len(p))
			copy(s.field[s.n:], p[:k])
			s.n += uint32(k)
			p = p[k:]
			if int(s.n) < hs {
				continue
			}
			if s.miniHeader {
				s.typ, s.size = binary.LittleEndian.Uint16(s.field[0:]), binary.LittleEndian.Uint32(s.field[2:])
			} else {
				s.typ, s.size = binary.LittleEndian.Uint16(s.field[8:]), binary.LittleEndian.Uint32(s.field[10:])
			}
			s.messages++
			if s.typ == MsgMainInit {
				if s.size < mainInitSize || s.size > MaxLinkSize {
					s.err = fmt.Errorf("%w: MAIN_INIT of %d bytes, want at least %d", ErrBadMessage, s.size, mainInitSize)
					return s.err
				}
			} else if s.messages > maxMessagesBeforeInit || uint64(s.bytes)+uint64(hs)+uint64(s.size) > maxBytesBeforeInit {
				s.err = fmt.Errorf("%w: no MAIN_INIT in the main channel's first %d messages or %d bytes", ErrBadMessage, maxMessagesBeforeInit, maxBytesBeforeInit)
				return s.err
			}
			s.bytes += uint32(hs)
			s.n = 0
			s.state = serverMsgBody
		case serverMsgBody:
			k := min(int(s.size-s.n), len(p))
			if s.typ == MsgMainInit && s.n < 4 {
				copy(s.field[s.n:4], p[:min(k, 4-int(s.n))])
			}
			s.n += uint32(k)
			p = p[k:]
			if s.typ == MsgMainInit && s.n >= 4 {
				s.session = binary.LittleEndian.Uint32(s.field[:4])
				if s.session == 0 {
					// 0 asks the server for a new session: a later channel
					// could never join this one.
					s.err = fmt.Errorf("%w: MAIN_INIT with session id 0", ErrBadMessage)
					return s.err
				}
				s.hasSession = true
				s.state = serverDone
				continue
			}
			s.bytes += uint32(k)
			if s.n == s.size {
				s.n = 0
				s.state = serverMsgHead
			}
		}
	}
	return nil
}
