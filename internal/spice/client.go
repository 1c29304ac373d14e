package spice

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
)

// maxTestMessage bounds a message the test client reads whole, so a broken
// server cannot make a test allocate without bound.
const maxTestMessage = 64 << 20

// Channel is one linked channel of the test client. It frames messages with
// the mini header, as spice-html5 does, and answers what keeps a server
// sending: SET_ACK, its ACK window, and PING.
type Channel struct {
	rw   io.ReadWriter
	Link Link
	// SessionID is the session the channel belongs to: from MAIN_INIT on
	// the main channel, from the link otherwise.
	SessionID uint32
	// ServerCommonCaps is the first common capabilities word of the
	// server's link reply.
	ServerCommonCaps uint32

	ackWindow uint32
	unacked   uint32
}

// LinkChannel links a channel on rw as spice-html5 does: a link message
// offering auth selection and the mini header for the channel type and
// session (connectionID 0 for a new session's main channel), then, after
// the server's reply, the password encrypted with the server's RSA key
// (RSA-OAEP with SHA-1, NUL-terminated: spice-server decrypts the ticket
// even when ticketing is disabled, so an empty password must be encrypted
// too). A refused link or ticket is a *LinkError.
//
// On a display channel it sends DISPLAY_INIT unless noDisplayInit is true
// (a test of what a server does without one). On the main channel it reads
// MAIN_INIT and sets SessionID.
func LinkChannel(rw io.ReadWriter, typ ChannelType, connectionID uint32, password string, noDisplayInit bool) (*Channel, error) {
	l := Link{ConnectionID: connectionID, Channel: typ, MiniHeader: true, AuthSelection: true}
	if _, err := rw.Write(AppendLink(nil, l)); err != nil {
		return nil, fmt.Errorf("sending the %s link message: %w", typ, err)
	}
	var hdr [LinkHeaderSize]byte
	if _, err := io.ReadFull(rw, hdr[:]); err != nil {
		return nil, fmt.Errorf("reading the %s link reply header: %w", typ, err)
	}
	if string(hdr[:4]) != Magic || binary.LittleEndian.Uint32(hdr[4:]) != VersionMajor {
		return nil, fmt.Errorf("%w: header % x", ErrBadReply, hdr)
	}
	size := binary.LittleEndian.Uint32(hdr[12:])
	if size < linkReplyFixed || size > MaxLinkSize {
		return nil, fmt.Errorf("%w: reply size %d", ErrBadReply, size)
	}
	reply := make([]byte, size)
	if _, err := io.ReadFull(rw, reply); err != nil {
		return nil, fmt.Errorf("reading the %s link reply: %w", typ, err)
	}
	if code := binary.LittleEndian.Uint32(reply); code != LinkOK {
		return nil, &LinkError{Code: code}
	}
	key, err := x509.ParsePKIXPublicKey(reply[4 : 4+pubKeySize])
	if err != nil {
		return nil, fmt.Errorf("%w: the server's public key: %v", ErrBadReply, err)
	}
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: the server's public key is a %T, not RSA", ErrBadReply, key)
	}
	ticket, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, []byte(password+"\x00"), nil)
	if err != nil {
		return nil, fmt.Errorf("encrypting the ticket: %w", err)
	}
	out := binary.LittleEndian.AppendUint32(nil, AuthSpice)
	out = append(out, ticket...)
	if _, err := rw.Write(out); err != nil {
		return nil, fmt.Errorf("sending the %s ticket: %w", typ, err)
	}
	var result [4]byte
	if _, err := io.ReadFull(rw, result[:]); err != nil {
		return nil, fmt.Errorf("reading the %s link result: %w", typ, err)
	}
	if code := binary.LittleEndian.Uint32(result[:]); code != LinkOK {
		return nil, &LinkError{Code: code}
	}
	c := &Channel{rw: rw, Link: l, SessionID: connectionID}
	// num_common_caps, num_channel_caps, caps_offset after the key.
	if caps := reply[4+pubKeySize:]; binary.LittleEndian.Uint32(caps) > 0 {
		if off := binary.LittleEndian.Uint32(caps[8:]); uint64(off)+4 <= uint64(len(reply)) {
			c.ServerCommonCaps = binary.LittleEndian.Uint32(reply[off:])
		}
	}
	switch typ {
	case ChannelDisplay:
		if !noDisplayInit {
			if _, err := rw.Write(AppendDisplayInit(nil, true)); err != nil {
				return nil, fmt.Errorf("sending DISPLAY_INIT: %w", err)
			}
		}
	case ChannelMain:
		mtyp, body, err := c.Next()
		if err != nil {
			return nil, fmt.Errorf("reading MAIN_INIT: %w", err)
		}
		if mtyp != MsgMainInit || len(body) < mainInitSize {
			return nil, fmt.Errorf("%w: the main channel's first message is type %d of %d bytes, not MAIN_INIT", ErrBadMessage, mtyp, len(body))
		}
		c.SessionID = binary.LittleEndian.Uint32(body)
	}
	return c, nil
}

// ReadMessage reads the next message whole, answering nothing.
func (c *Channel) ReadMessage() (typ uint16, body []byte, err error) {
	var h [MiniHeaderSize]byte
	if _, err := io.ReadFull(c.rw, h[:]); err != nil {
		return 0, nil, fmt.Errorf("reading a %s message header: %w", c.Link.Channel, err)
	}
	typ, size := binary.LittleEndian.Uint16(h[:]), binary.LittleEndian.Uint32(h[2:])
	if size > maxTestMessage {
		return 0, nil, fmt.Errorf("%w: a %s message of %d bytes", ErrBadMessage, c.Link.Channel, size)
	}
	body = make([]byte, size)
	if _, err := io.ReadFull(c.rw, body); err != nil {
		return 0, nil, fmt.Errorf("reading a %s message of type %d: %w", c.Link.Channel, typ, err)
	}
	return typ, body, nil
}

// WriteMessage sends a message.
func (c *Channel) WriteMessage(typ uint16, body []byte) error {
	b := binary.LittleEndian.AppendUint16(make([]byte, 0, MiniHeaderSize+len(body)), typ)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	if _, err := c.rw.Write(b); err != nil {
		return fmt.Errorf("sending a %s message of type %d: %w", c.Link.Channel, typ, err)
	}
	return nil
}

// Next reads the next message, as ReadMessage, after answering the
// previous ones as a client must: ACK_SYNC to SET_ACK, an ACK every window
// of messages, PONG to PING (SET_ACK and PING are returned too).
func (c *Channel) Next() (typ uint16, body []byte, err error) {
	typ, body, err = c.ReadMessage()
	if err != nil {
		return 0, nil, err
	}
	switch typ {
	case MsgSetAck:
		if len(body) < 8 {
			return 0, nil, fmt.Errorf("%w: SET_ACK of %d bytes", ErrBadMessage, len(body))
		}
		c.ackWindow = binary.LittleEndian.Uint32(body[4:])
		c.unacked = 0
		if err := c.WriteMessage(MsgcAckSync, body[:4]); err != nil {
			return 0, nil, err
		}
		return typ, body, nil
	case MsgPing:
		if err := c.WriteMessage(MsgcPong, body[:min(len(body), 12)]); err != nil {
			return 0, nil, err
		}
	}
	if c.ackWindow > 0 {
		c.unacked++
		if c.unacked >= c.ackWindow {
			c.unacked = 0
			if err := c.WriteMessage(MsgcAck, nil); err != nil {
				return 0, nil, err
			}
		}
	}
	return typ, body, nil
}

// WaitFor reads messages (answering them as Next does) until one of type
// typ arrives, and returns its body; at most limit messages are read.
func (c *Channel) WaitFor(typ uint16, limit int) ([]byte, error) {
	for range limit {
		t, body, err := c.Next()
		if err != nil {
			return nil, err
		}
		if t == typ {
			return body, nil
		}
	}
	return nil, fmt.Errorf("%w: no message of type %d among the %s channel's next %d", ErrBadMessage, typ, c.Link.Channel, limit)
}
