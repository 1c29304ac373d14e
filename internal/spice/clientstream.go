package spice

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// What ClientStream is reading.
const (
	clientLink      = iota // the link message
	clientMechanism        // the u32 auth mechanism (with auth selection)
	clientTicket           // the encrypted ticket
	clientHeader           // a display channel's first message header
	clientBody             // the body of that message (DISPLAY_INIT)
	clientWait             // DISPLAY_INIT passed; the server has not started
	clientPass             // nothing more to see: bytes pass untouched
)

// maxHeldAfterInit bounds what a display channel's client may send after
// DISPLAY_INIT before the server has started the channel. spice-html5
// sends nothing (it answers the server's first message); spice-gtk may send
// a preference or two. spice-server takes no client message on a display
// channel larger than 1024 bytes.
const maxHeldAfterInit = 1024

// glzMaxWindow is spice-server's LZ_MAX_WINDOW_SIZE: a DISPLAY_INIT asking
// for a larger GLZ dictionary window makes QEMU 7.2 abort.
const glzMaxWindow = 1 << 25

// ClientStream follows the client's side of one channel: the link message
// (see LinkParser), the ticket and, on a display channel, what it takes to
// keep the channel from crashing the server. The zero value is ready.
//
// Why a display channel needs care: spice-server (0.15.1, QEMU 7.2) starts a
// display channel by reading from the client until DISPLAY_INIT has been
// handled, and if the connection fails during that wait (the client closed,
// or sent a message the server refuses, even in the same segment as
// DISPLAY_INIT) it frees the channel while still using it, and QEMU
// crashes. It sends nothing on the channel before that wait is over, so its
// first byte after the link result tells the wait is over (see
// ServerStream.DisplayStarted). So on a display channel ClientStream:
//
//   - holds the first message until it is complete and passes it only if it
//     is a DISPLAY_INIT spice-server accepts (a GLZ window of at most 2^25);
//     anything else is an error, and Finish supplies a DISPLAY_INIT of its
//     own;
//   - holds what follows DISPLAY_INIT (at most 1024 bytes) until the caller
//     reports, with ServerStarted, that the server has started the channel;
//   - tells, through Finish, whether the caller must wait for that start
//     before closing the server's side.
//
// Its Filter passes bytes on as they arrive otherwise; once nothing more
// needs looking at, Passthrough is true and the relay may copy without
// calling Filter.
//
// The link message passes only once it is complete and valid, so nothing a
// client that is not SPICE sends reaches the server. It usually arrives in
// one piece and passes without a copy; one that arrives split is held
// (at most LinkHeaderSize+MaxLinkSize bytes).
//
// Only the SPICE ticket is followed (the RSA-encrypted password spice-html5
// sends); a client that selects SASL is refused, as the server's side could
// not be followed either.
type ClientStream struct {
	lp    LinkParser
	link  []byte // the link message so far, when it arrives split
	state int
	n     uint32 // bytes of the current field or held message read so far
	// msg holds a display channel's first message until it is judged
	// (a header, mini or full, and a DISPLAY_INIT body), then what the
	// client sends before the server has started the channel.
	msg     [max(DataHeaderSize+maxDisplayInitBody, maxHeldAfterInit)]byte
	bodyLen uint32
	started atomic.Bool // set by ServerStarted, from the server's side
	err     error
}

// Link returns the channel's link message and whether it is complete and
// valid.
func (c *ClientStream) Link() (Link, bool) { return c.lp.Link(), c.lp.Done() }

// Passthrough reports whether the stream needs no more looking at: every
// later byte may go to the server as it is.
func (c *ClientStream) Passthrough() bool {
	return c.state == clientPass || (c.state == clientWait && c.n == 0 && c.started.Load())
}

// DisplayInitSent reports whether a display channel's DISPLAY_INIT has
// passed to the server.
func (c *ClientStream) DisplayInitSent() bool {
	return c.lp.Link().Channel == ChannelDisplay && (c.state == clientWait || c.state == clientPass)
}

// ServerStarted records that the server has started a display channel
// (ServerStream.DisplayStarted): what the client sent since DISPLAY_INIT
// may go to the server with the next Filter. It may be called from the
// goroutine that reads the server while another calls Filter.
func (c *ClientStream) ServerStarted() { c.started.Store(true) }

// Filter appends to dst the bytes of p that may go to the server now and
// returns it. After an error (wrapping ErrBadLink or ErrBadMessage) the
// stream must not be used again, except for Finish; nothing of the
// offending message was appended.
func (c *ClientStream) Filter(dst, p []byte) ([]byte, error) {
	if c.err != nil {
		return dst, c.err
	}
	if c.state == clientWait && c.started.Load() {
		dst = append(dst, c.msg[:c.n]...)
		c.state = clientPass
	}
	for len(p) > 0 {
		switch c.state {
		case clientPass:
			return append(dst, p...), nil
		case clientLink:
			n, done, err := c.lp.Feed(p)
			if err != nil {
				c.link = nil
				c.err = err
				return dst, err
			}
			if !done {
				c.link = append(c.link, p[:n]...)
				return dst, nil
			}
			dst = append(append(dst, c.link...), p[:n]...)
			c.link = nil
			p = p[n:]
			c.n = 0
			c.state = clientTicket
			if c.lp.Link().AuthSelection {
				c.state = clientMechanism
			}
		case clientMechanism:
			// The mechanism is judged whole, so held like a message part.
			k := min(4-int(c.n), len(p))
			copy(c.msg[c.n:], p[:k])
			c.n += uint32(k)
			p = p[k:]
			if c.n < 4 {
				continue
			}
			if m := binary.LittleEndian.Uint32(c.msg[:4]); m != AuthSpice {
				c.err = fmt.Errorf("%w: auth mechanism %d, only SPICE tickets (%d) are followed", ErrBadMessage, m, AuthSpice)
				return dst, c.err
			}
			dst = append(dst, c.msg[:4]...)
			c.n = 0
			c.state = clientTicket
		case clientTicket:
			k := min(TicketSize-int(c.n), len(p))
			dst = append(dst, p[:k]...)
			c.n += uint32(k)
			p = p[k:]
			if c.n == TicketSize {
				c.n = 0
				c.state = clientPass
				if c.lp.Link().Channel == ChannelDisplay {
					c.state = clientHeader
				}
			}
		case clientHeader:
			hs := c.headerSize()
			k := min(hs-int(c.n), len(p))
			copy(c.msg[c.n:], p[:k])
			c.n += uint32(k)
			p = p[k:]
			if int(c.n) < hs {
				continue
			}
			typ, size := c.header()
			if typ != MsgcDisplayInit {
				c.err = fmt.Errorf("%w: a display channel's first message is type %d, not DISPLAY_INIT (%d)", ErrBadMessage, typ, MsgcDisplayInit)
				return dst, c.err
			}
			if size < displayInitBodySize || size > maxDisplayInitBody {
				c.err = fmt.Errorf("%w: DISPLAY_INIT of %d bytes (%d..%d)", ErrBadMessage, size, displayInitBodySize, maxDisplayInitBody)
				return dst, c.err
			}
			c.bodyLen = size
			c.state = clientBody
		case clientBody:
			hs := uint32(c.headerSize())
			end := hs + c.bodyLen
			k := min(int(end-c.n), len(p))
			copy(c.msg[c.n:], p[:k])
			c.n += uint32(k)
			p = p[k:]
			if c.n < end {
				continue
			}
			// pixmap_cache_id u8, pixmap_cache_size u64, glz_dictionary_id u8,
			// then the window.
			if w := binary.LittleEndian.Uint32(c.msg[hs+10:]); w > glzMaxWindow {
				c.err = fmt.Errorf("%w: DISPLAY_INIT asks for a GLZ window of %d (at most %d)", ErrBadMessage, w, glzMaxWindow)
				return dst, c.err
			}
			dst = append(dst, c.msg[:end]...)
			c.n = 0
			c.state = clientWait
			if c.started.Load() {
				c.state = clientPass
			}
		case clientWait:
			if c.started.Load() {
				dst = append(dst, c.msg[:c.n]...)
				c.state = clientPass
				continue
			}
			if int(c.n)+len(p) > maxHeldAfterInit {
				c.err = fmt.Errorf("%w: more than %d bytes after DISPLAY_INIT before the server started the display channel", ErrBadMessage, maxHeldAfterInit)
				return dst, c.err
			}
			c.n += uint32(copy(c.msg[c.n:], p))
			p = nil
		}
	}
	return dst, nil
}

func (c *ClientStream) headerSize() int {
	if c.lp.Link().MiniHeader {
		return MiniHeaderSize
	}
	return DataHeaderSize
}

// header returns the type and size of the held message header.
func (c *ClientStream) header() (typ uint16, size uint32) {
	if c.lp.Link().MiniHeader {
		return binary.LittleEndian.Uint16(c.msg[0:]), binary.LittleEndian.Uint32(c.msg[2:])
	}
	return binary.LittleEndian.Uint16(c.msg[8:]), binary.LittleEndian.Uint32(c.msg[10:])
}

// Finish appends to dst what the server must receive before the proxy
// closes its side of the channel, and returns it, with whether the proxy
// must then wait for ServerStream.DisplayStarted (or the server's own
// close, or an error from it) before closing, so that the close does not
// fall in the server's wait for DISPLAY_INIT. The wait is short: the
// server starts a display channel within milliseconds of DISPLAY_INIT.
//
// On a display channel whose ticket has passed but whose DISPLAY_INIT has
// not, what is appended is a DISPLAY_INIT of the proxy's own (an incomplete
// or refused first message held back is dropped: the server saw none of
// it). On every other channel, and before the ticket is complete (the
// server has not made the channel yet), nothing and no wait.
func (c *ClientStream) Finish(dst []byte) (out []byte, wait bool) {
	if c.lp.Link().Channel != ChannelDisplay {
		return dst, false
	}
	switch c.state {
	case clientHeader, clientBody:
		return AppendDisplayInit(dst, c.lp.Link().MiniHeader), !c.started.Load()
	case clientWait, clientPass:
		return dst, !c.started.Load()
	}
	return dst, false
}

// AppendDisplayInit appends a SPICE_MSGC_DISPLAY_INIT message to dst, framed
// with the mini header or the full one, and returns it. Its values are
// those spice-html5 sends: pixmap cache 1 of 10 MiB, no GLZ dictionary
// window; spice-server accepts them and shares the cache by id with the
// client's other display channels.
func AppendDisplayInit(dst []byte, miniHeader bool) []byte {
	if miniHeader {
		dst = binary.LittleEndian.AppendUint16(dst, MsgcDisplayInit)
		dst = binary.LittleEndian.AppendUint32(dst, displayInitBodySize)
	} else {
		dst = binary.LittleEndian.AppendUint64(dst, 1) // serial: the channel's first message
		dst = binary.LittleEndian.AppendUint16(dst, MsgcDisplayInit)
		dst = binary.LittleEndian.AppendUint32(dst, displayInitBodySize)
		dst = binary.LittleEndian.AppendUint32(dst, 0) // no sub-messages
	}
	dst = append(dst, 1)                                // pixmap_cache_id
	dst = binary.LittleEndian.AppendUint64(dst, 10<<20) // pixmap_cache_size
	dst = append(dst, 0)                                // glz_dictionary_id
	dst = binary.LittleEndian.AppendUint32(dst, 0)      // glz_dictionary_window_size
	return dst
}

// CloseServer ends the server's side of a channel whose client has left,
// for a relay that no longer reads from server: it writes what c.Finish asks
// for, then, when Finish asks for a wait, reads and discards the server's
// bytes, fed to s, until the display channel has started, the server
// closes or fails, or timeout passes; then it closes server. It returns an
// error when the wait was cut short by the timeout or the write failed:
// QEMU 7.2 may then crash.
func CloseServer(server net.Conn, c *ClientStream, s *ServerStream, timeout time.Duration) error {
	defer server.Close()
	fin, wait := c.Finish(nil)
	if len(fin) > 0 {
		_ = server.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := server.Write(fin); err != nil {
			return fmt.Errorf("sending DISPLAY_INIT before closing: %w", err)
		}
	}
	if !wait || s.DisplayStarted() {
		return nil
	}
	_ = server.SetReadDeadline(time.Now().Add(timeout))
	var buf [512]byte
	for !s.DisplayStarted() {
		n, err := server.Read(buf[:])
		if ferr := s.Feed(buf[:n]); ferr != nil {
			return nil // the server refused the channel: it made none
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("waiting %v for the server to start the display channel: %w", timeout, err)
		}
		if err != nil {
			return nil // the server closed first
		}
	}
	return nil
}
