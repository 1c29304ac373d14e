package spice

import (
	"encoding/binary"
	"fmt"
)

// Link is what a client's link message says about its channel.
type Link struct {
	// ConnectionID is 0 on the main channel of a new session; every other
	// channel carries the session id the server sent in MAIN_INIT. A main
	// channel with another id asks to be a migration target: spice-server
	// then ends the live session and sends no MAIN_INIT, so a proxy refuses
	// it. (Any new main channel ends the live session: QEMU's server takes
	// one client.)
	ConnectionID uint32
	Channel      ChannelType
	ChannelID    uint8
	Minor        uint32
	// MiniHeader: the client offers SPICE_COMMON_CAP_MINI_HEADER. The server
	// then frames its messages, and expects the client's, with the 6-byte
	// SpiceMiniDataHeader instead of the 18-byte SpiceDataHeader
	// (spice-server decides on the client's capability alone).
	MiniHeader bool
	// AuthSelection: the client offers SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION,
	// so its ticket is preceded by a u32 auth mechanism.
	AuthSelection bool
}

// LinkParser checks the client's first bytes on a channel, SpiceLinkHeader
// then SpiceLinkMess, as they arrive, and reads the Link from them. It holds
// no bytes, only the fields it needs. The zero value is ready.
//
// It is as strict as spice-server: magic "REDQ", major version 2, a size of
// at least the fixed part of SpiceLinkMess and at most MaxLinkSize, at most
// 1024 capabilities of each kind, all inside the message, and a channel
// type other than 0. A bad magic is reported at its first wrong byte, so a
// client that is not SPICE at all is told apart at once.
type LinkParser struct {
	hdr   [LinkHeaderSize]byte
	fixed [linkMessFixed]byte
	caps  [4]byte // the first common capabilities word
	pos   uint32  // bytes consumed so far
	size  uint32  // SpiceLinkMess size from the header
	link  Link
	done  bool
	err   error
}

// Feed reads p as the next bytes from the client. It returns how many bytes
// of p belong to the link message (the rest, if any, follow it: the ticket)
// and done once the message is complete and valid. An error is final and
// wraps ErrBadLink.
func (lp *LinkParser) Feed(p []byte) (n int, done bool, err error) {
	if lp.err != nil || lp.done {
		return 0, lp.done, lp.err
	}
	for n < len(p) {
		b := p[n]
		n++
		if err := lp.byte(b); err != nil {
			lp.err = err
			return n, false, err
		}
		if lp.done {
			return n, true, nil
		}
	}
	return n, false, nil
}

// Done reports whether the whole link message arrived and was valid.
func (lp *LinkParser) Done() bool { return lp.done }

// Link returns what the link message said; valid once Done.
func (lp *LinkParser) Link() Link { return lp.link }

// Consumed returns how many bytes the parser has read, at most
// LinkHeaderSize+MaxLinkSize.
func (lp *LinkParser) Consumed() int { return int(lp.pos) }

func (lp *LinkParser) byte(b byte) error {
	pos := lp.pos
	lp.pos++
	switch {
	case pos < LinkHeaderSize:
		if pos < 4 && b != Magic[pos] {
			return fmt.Errorf("%w: magic is not %q (byte %d is %#02x)", ErrBadLink, Magic, pos, b)
		}
		lp.hdr[pos] = b
		if pos == LinkHeaderSize-1 {
			return lp.checkHeader()
		}
		return nil
	case pos < LinkHeaderSize+linkMessFixed:
		lp.fixed[pos-LinkHeaderSize] = b
		if pos == LinkHeaderSize+linkMessFixed-1 {
			if err := lp.checkFixed(); err != nil {
				return err
			}
		}
	default:
		off := pos - LinkHeaderSize
		if c := binary.LittleEndian.Uint32(lp.fixed[14:]); off >= c && off < c+4 && binary.LittleEndian.Uint32(lp.fixed[6:]) > 0 {
			lp.caps[off-c] = b
		}
	}
	if lp.pos == LinkHeaderSize+lp.size {
		lp.finish()
	}
	return nil
}

func (lp *LinkParser) checkHeader() error {
	major := binary.LittleEndian.Uint32(lp.hdr[4:])
	if major != VersionMajor {
		return fmt.Errorf("%w: major version %d, want %d", ErrBadLink, major, VersionMajor)
	}
	lp.link.Minor = binary.LittleEndian.Uint32(lp.hdr[8:])
	lp.size = binary.LittleEndian.Uint32(lp.hdr[12:])
	if lp.size < linkMessFixed || lp.size > MaxLinkSize {
		return fmt.Errorf("%w: link message size %d outside %d..%d", ErrBadLink, lp.size, linkMessFixed, MaxLinkSize)
	}
	return nil
}

func (lp *LinkParser) checkFixed() error {
	f := lp.fixed[:]
	lp.link.ConnectionID = binary.LittleEndian.Uint32(f)
	lp.link.Channel = ChannelType(f[4])
	lp.link.ChannelID = f[5]
	common := binary.LittleEndian.Uint32(f[6:])
	channel := binary.LittleEndian.Uint32(f[10:])
	offset := binary.LittleEndian.Uint32(f[14:])
	if lp.link.Channel == 0 {
		return fmt.Errorf("%w: channel type 0", ErrBadLink)
	}
	if common > maxCaps || channel > maxCaps {
		return fmt.Errorf("%w: %d common and %d channel capabilities (at most %d each)", ErrBadLink, common, channel, maxCaps)
	}
	if n := common + channel; n > 0 && (offset < linkMessFixed || uint64(offset)+4*uint64(n) > uint64(lp.size)) {
		return fmt.Errorf("%w: %d capabilities at offset %d do not fit a %d-byte link message", ErrBadLink, n, offset, lp.size)
	}
	return nil
}

func (lp *LinkParser) finish() {
	caps := binary.LittleEndian.Uint32(lp.caps[:])
	lp.link.MiniHeader = caps&(1<<CapMiniHeader) != 0
	lp.link.AuthSelection = caps&(1<<CapProtocolAuthSelection) != 0
	lp.done = true
}

// AppendLink appends a link message for l (header and SpiceLinkMess with
// the common capabilities l asks for and channelCaps) to dst.
func AppendLink(dst []byte, l Link, channelCaps ...uint32) []byte {
	var common uint32
	if l.MiniHeader {
		common |= 1 << CapMiniHeader
	}
	if l.AuthSelection {
		common |= 1<<CapProtocolAuthSelection | 1<<CapAuthSpice
	}
	size := linkMessFixed + 4 + 4*len(channelCaps)
	minor := l.Minor
	if minor == 0 {
		minor = VersionMinor
	}
	dst = append(dst, Magic...)
	dst = binary.LittleEndian.AppendUint32(dst, VersionMajor)
	dst = binary.LittleEndian.AppendUint32(dst, minor)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(size))
	dst = binary.LittleEndian.AppendUint32(dst, l.ConnectionID)
	dst = append(dst, byte(l.Channel), l.ChannelID)
	dst = binary.LittleEndian.AppendUint32(dst, 1)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(channelCaps)))
	dst = binary.LittleEndian.AppendUint32(dst, linkMessFixed)
	dst = binary.LittleEndian.AppendUint32(dst, common)
	for _, c := range channelCaps {
		dst = binary.LittleEndian.AppendUint32(dst, c)
	}
	return dst
}
