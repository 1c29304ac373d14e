// Package spice holds what a console proxy must understand of SPICE, the
// protocol between spice-html5 (or any SPICE client) and QEMU's SPICE server,
// to admit and relay a channel without being a SPICE implementation:
//
//   - the client's link message (SpiceLinkHeader and SpiceLinkMess), checked
//     and bounded, which names the channel and the session it joins;
//   - the start of the server's answer (SpiceLinkReply, link result) and, on
//     the main channel, the session id from MAIN_INIT, which later channels
//     of the same session carry as their connection_id;
//   - on a display channel, what keeps a client from crashing the server:
//     QEMU 7.2 with libspice-server 0.15.1 crashes when a display channel's
//     connection fails before the server has handled its DISPLAY_INIT
//     (closed before it or right after it, or a refused message with it),
//     and aborts on a DISPLAY_INIT asking for too large a GLZ window.
//
// A proxy runs, per channel, a ClientStream over the browser's bytes (its
// Filter says what may reach the server, its Link says which channel and
// session) and a ServerStream over the server's (the session id on the main
// channel; on a display channel, when it has started, which it reports to
// the ClientStream with ServerStarted). To close the server's side of a
// display channel, whatever the reason, it sends what ClientStream.Finish
// asks and waits as Finish says (CloseServer does both).
//
// Each parser is fed the bytes of one direction as they arrive, split or
// joined in any way (WebSocket messages do both), decides the same however
// they are split, holds a few fixed-size fields (and a link message that
// arrives split, until it is whole) but never what it only skips, and stops
// looking once it knows what it was for, so the relay can go back to
// copying.
//
// The package also holds a minimal SPICE client (link with ticket, MAIN_INIT,
// raw messages) for tests; it is a test tool, not a viewer.
//
// Numbers and layouts are those of spice-protocol (spice/protocol.h,
// spice/enums.h), as spice-html5 and spice-server use them; all integers on
// the wire are little-endian.
package spice

import (
	"errors"
	"fmt"
)

// Magic starts every SpiceLinkHeader, in both directions.
const Magic = "REDQ"

// Protocol version: the major must match; spice-html5 and spice-server both
// send minor 2.
const (
	VersionMajor = 2
	VersionMinor = 2
)

// Sizes on the wire.
const (
	// LinkHeaderSize is SpiceLinkHeader: magic, major, minor, size.
	LinkHeaderSize = 16
	// linkMessFixed is SpiceLinkMess without its capabilities:
	// connection_id u32, channel_type u8, channel_id u8, num_common_caps u32,
	// num_channel_caps u32, caps_offset u32.
	linkMessFixed = 18
	// MaxLinkSize bounds the size a link header announces. spice-server
	// refuses a SpiceLinkMess larger than 4096 bytes, so nothing valid is
	// larger.
	MaxLinkSize = 4096
	// maxCaps is spice-server's own bound on each capability count.
	maxCaps = 1024
	// pubKeySize is the RSA public key in SpiceLinkReply (DER
	// SubjectPublicKeyInfo of a 1024-bit key).
	pubKeySize = 1024/8 + 34
	// linkReplyFixed is SpiceLinkReply without its capabilities: error u32,
	// pub_key, num_common_caps u32, num_channel_caps u32, caps_offset u32.
	linkReplyFixed = 4 + pubKeySize + 12
	// TicketSize is the RSA-encrypted password the client sends after the
	// reply (SPICE_TICKET_KEY_PAIR_LENGTH / 8).
	TicketSize = 1024 / 8
	// MiniHeaderSize is SpiceMiniDataHeader: type u16, size u32.
	MiniHeaderSize = 6
	// DataHeaderSize is SpiceDataHeader, used when the client does not offer
	// the mini header: serial u64, type u16, size u32, sub_list u32.
	DataHeaderSize = 18
)

// ChannelType is SpiceLinkMess.channel_type.
type ChannelType uint8

// Channel types (enum SpiceChannelType).
const (
	ChannelMain      ChannelType = 1
	ChannelDisplay   ChannelType = 2
	ChannelInputs    ChannelType = 3
	ChannelCursor    ChannelType = 4
	ChannelPlayback  ChannelType = 5
	ChannelRecord    ChannelType = 6
	ChannelTunnel    ChannelType = 7
	ChannelSmartcard ChannelType = 8
	ChannelUSBRedir  ChannelType = 9
	ChannelPort      ChannelType = 10
	ChannelWebDAV    ChannelType = 11
)

var channelNames = [...]string{"", "main", "display", "inputs", "cursor", "playback", "record",
	"tunnel", "smartcard", "usbredir", "port", "webdav"}

func (c ChannelType) String() string {
	if int(c) < len(channelNames) && c != 0 {
		return channelNames[c]
	}
	return fmt.Sprintf("channel-type-%d", uint8(c))
}

// Common capabilities (SpiceCommonCap), bits of the first common caps word.
const (
	CapProtocolAuthSelection = 0
	CapAuthSpice             = 1
	CapAuthSASL              = 2
	CapMiniHeader            = 3
)

// Auth mechanisms a client selects when both offer CapProtocolAuthSelection.
const (
	AuthSpice = 1
	AuthSASL  = 2
)

// Message types used here. Server messages (SPICE_MSG_*) and client messages
// (SPICE_MSGC_*) are numbered separately; 1..99 are common to all channels,
// 101 and up belong to the channel.
const (
	MsgSetAck          = 3   // SPICE_MSG_SET_ACK
	MsgPing            = 4   // SPICE_MSG_PING
	MsgNotify          = 7   // SPICE_MSG_NOTIFY
	MsgMainInit        = 103 // SPICE_MSG_MAIN_INIT, the main channel's first message
	MsgChannelsList    = 104 // SPICE_MSG_MAIN_CHANNELS_LIST
	MsgDisplayMark     = 102 // SPICE_MSG_DISPLAY_MARK
	MsgDisplayDrawCopy = 304 // SPICE_MSG_DISPLAY_DRAW_COPY
	MsgSurfaceCreate   = 314 // SPICE_MSG_DISPLAY_SURFACE_CREATE

	MsgcAckSync        = 1   // SPICE_MSGC_ACK_SYNC
	MsgcAck            = 2   // SPICE_MSGC_ACK
	MsgcPong           = 3   // SPICE_MSGC_PONG
	MsgcAttachChannels = 104 // SPICE_MSGC_MAIN_ATTACH_CHANNELS
	MsgcDisplayInit    = 101 // SPICE_MSGC_DISPLAY_INIT
)

// displayInitBodySize is SpiceMsgcDisplayInit: pixmap_cache_id u8,
// pixmap_cache_size u64, glz_dictionary_id u8, glz_dictionary_window_size
// u32.
const displayInitBodySize = 14

// maxDisplayInitBody bounds the DISPLAY_INIT a client may announce: the
// structure is 14 bytes and spice-server ignores what follows (QEMU 7.2
// takes 214), but ClientStream holds the message whole, so it must be small.
const maxDisplayInitBody = 256

// Link result codes (SpiceLinkErr).
const (
	LinkOK                 = 0
	LinkErrError           = 1
	LinkErrInvalidMagic    = 2
	LinkErrInvalidData     = 3
	LinkErrVersionMismatch = 4
	LinkErrNeedSecured     = 5
	LinkErrNeedUnsecured   = 6
	LinkErrPermission      = 7
	LinkErrBadConnectionID = 8
	LinkErrChannelNotAvail = 9
)

// Errors, tested with errors.Is. Each parser's error wraps one of them
// with what was wrong.
var (
	// ErrBadLink: the client's first bytes are not a valid SpiceLinkHeader
	// and SpiceLinkMess.
	ErrBadLink = errors.New("spice: bad link message")
	// ErrBadReply: the server's first bytes are not a valid SpiceLinkHeader
	// and SpiceLinkReply.
	ErrBadReply = errors.New("spice: bad link reply")
	// ErrBadMessage: a message after the link breaks what this package
	// expects of it (a MAIN_INIT too short, a display channel whose first
	// message is not DISPLAY_INIT, an auth mechanism other than SPICE's).
	ErrBadMessage = errors.New("spice: unexpected message")
)

// LinkError is a non-zero SpiceLinkErr from the server: in the link reply
// (the server refused the link message) or in the link result (it refused
// the ticket or the connection id).
type LinkError struct {
	Code uint32
}

func (e *LinkError) Error() string {
	var what string
	switch e.Code {
	case LinkErrError:
		what = "error"
	case LinkErrInvalidMagic:
		what = "invalid magic"
	case LinkErrInvalidData:
		what = "invalid data"
	case LinkErrVersionMismatch:
		what = "version mismatch"
	case LinkErrNeedSecured:
		what = "needs TLS"
	case LinkErrNeedUnsecured:
		what = "needs no TLS"
	case LinkErrPermission:
		what = "permission denied"
	case LinkErrBadConnectionID:
		what = "bad connection id"
	case LinkErrChannelNotAvail:
		what = "channel not available"
	default:
		what = "unknown error"
	}
	return fmt.Sprintf("spice: server refused the link: %s (%d)", what, e.Code)
}
