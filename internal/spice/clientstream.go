package spice

import (
	"encoding/binary"
	"fmt"
)

// What ClientStream is reading.
const (
	clientLink      = iota // the link message
	clientMechanism        // the u32 auth mechanism (with auth selection)
	clientTicket           // the encrypted ticket
	clientHeader           // a display channel's first message header
	clientBody             // the body of that message (DISPLAY_INIT)
	clientPass             // nothing more to see: bytes pass untouched
)

// ClientStream follows the client's side of one channel: the link message
// (see LinkParser), the ticket and, on a display channel, the first message,
// which must be DISPLAY_INIT. The zero value is ready.
//
// Its Filter passes bytes on as they arrive, with one exception that makes
// closing a display channel harmless: until the DISPLAY_INIT has passed, a
// display channel's first message is held until it is complete (a header
// and at most 256 bytes of body), so the server only ever sees whole
// messages, and Finish can then add a DISPLAY_INIT of its own. Once the
// ticket has passed (or, on a display channel, the DISPLAY_INIT), Passthrough
// is true and the relay may copy without calling Filter.
//
// The link bytes pass too, as they arrive: a caller that must not let an
// unchecked link reach the server holds what Filter returned until Link
// reports it complete (at most LinkHeaderSize+MaxLinkSize bytes).
//
// Only the SPICE ticket is followed (the RSA-encrypted password spice-html5
// sends); a client that selects SASL is refused, as the server's side could
// not be followed either.
type ClientStream struct {
	lp    LinkParser
	state int
	n     uint32 // bytes of the current field read so far
	// msg holds a display channel's first message until it is judged:
	// a header (mini or full) and a DISPLAY_INIT body.
	msg     [DataHeaderSize + maxDisplayInitBody]byte
	bodyLen uint32
	err     error
}

// Link returns the channel's link message and whether it is complete and
// valid.
func (c *ClientStream) Link() (Link, bool) { return c.lp.Link(), c.lp.Done() }

// Passthrough reports whether the stream needs no more looking at: every
// later byte may go to the server as it is.
func (c *ClientStream) Passthrough() bool { return c.state == clientPass }

// DisplayInitSent reports whether a display channel's DISPLAY_INIT has
// passed to the server.
func (c *ClientStream) DisplayInitSent() bool {
	return c.state == clientPass && c.lp.Link().Channel == ChannelDisplay
}

// Filter appends to dst the bytes of p that may go to the server now and
// returns it. After an error (wrapping ErrBadLink or ErrBadMessage) the
// stream must not be used again; nothing of the offending message was
// appended.
func (c *ClientStream) Filter(dst, p []byte) ([]byte, error) {
	if c.err != nil {
		return dst, c.err
	}
	for len(p) > 0 {
		switch c.state {
		case clientPass:
			return append(dst, p...), nil
		case clientLink:
			n, done, err := c.lp.Feed(p)
			if err != nil {
				c.err = err
				return dst, err
			}
			dst = append(dst, p[:n]...)
			p = p[n:]
			if done {
				c.n = 0
				c.state = clientTicket
				if c.lp.Link().AuthSelection {
					c.state = clientMechanism
				}
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
			end := uint32(c.headerSize()) + c.bodyLen
			k := min(int(end-c.n), len(p))
			copy(c.msg[c.n:], p[:k])
			c.n += uint32(k)
			p = p[k:]
			if c.n == end {
				dst = append(dst, c.msg[:end]...)
				c.state = clientPass
			}
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
// closes its side of the channel, and returns it: on a display channel
// whose ticket has passed but whose DISPLAY_INIT has not, a DISPLAY_INIT of
// the proxy's own. A held, incomplete first message is dropped: the server
// never saw any of it. On every other channel, and in every other state,
// nothing: before the ticket is complete the server has not created the
// channel, and after DISPLAY_INIT closing is safe.
func (c *ClientStream) Finish(dst []byte) []byte {
	if c.lp.Link().Channel != ChannelDisplay {
		return dst
	}
	if c.state == clientHeader || c.state == clientBody {
		return AppendDisplayInit(dst, c.lp.Link().MiniHeader)
	}
	return dst
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
