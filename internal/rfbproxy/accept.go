// Package rfbproxy is the RFB-aware part of a console on the proxy's
// server sides: it offers the browser RFB 3.8 with security None in the
// VNC server's place (Accept), runs a native viewer's handshake up to the
// token it carries (AcceptNative), and frames the browser's messages for
// view-only consoles, dropping input. Logging in to the VNC server, the
// client side, is rfb.Login.
//
// It knows nothing of Caddy or WebSockets: it works on byte streams, and the
// caller sets their deadlines.
package rfbproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// ErrBrowser: the browser broke the RFB handshake the proxy offered it.
var ErrBrowser = errors.New("browser broke the RFB handshake")

// Accept runs the server side of the RFB handshake with the browser, in
// the VNC server's place: it offers version 3.8 and security None (the
// browser's credential was its token), takes an answer of 3.3 or 3.7 too,
// as RFC 6143 asks of a server, and reads ClientInit. It returns ClientInit's
// shared flag and the version agreed.
//
// Every write is one protocol step, so that a caller that frames each write
// as one WebSocket message sends no more messages than needed.
func Accept(rw io.ReadWriter) (shared bool, minor int, err error) {
	if _, err := rw.Write(rfb.AppendVersion(nil, 3, 8)); err != nil {
		return false, 0, fmt.Errorf("sending version: %w", err)
	}
	var v [rfb.VersionLen]byte
	if _, err := io.ReadFull(rw, v[:]); err != nil {
		return false, 0, fmt.Errorf("reading version: %w", err)
	}
	major, minor, err := rfb.ParseVersion(v[:])
	if err != nil || major != 3 {
		return false, 0, fmt.Errorf("%w: version %q is not RFB 3.x", ErrBrowser, rfb.Printable(v[:]))
	}
	minor = rfb.UsedMinor(minor)

	if minor == 3 {
		if _, err := rw.Write(binary.BigEndian.AppendUint32(nil, rfb.SecurityNone)); err != nil {
			return false, minor, fmt.Errorf("sending security type: %w", err)
		}
	} else {
		if _, err := rw.Write([]byte{1, rfb.SecurityNone}); err != nil {
			return false, minor, fmt.Errorf("sending security types: %w", err)
		}
		var choice [1]byte
		if _, err := io.ReadFull(rw, choice[:]); err != nil {
			return false, minor, fmt.Errorf("reading security type: %w", err)
		}
		if choice[0] != rfb.SecurityNone {
			return false, minor, fmt.Errorf("%w: chose security type %d, which was not offered", ErrBrowser, choice[0])
		}
		if minor == 8 {
			if _, err := rw.Write([]byte{0, 0, 0, 0}); err != nil {
				return false, minor, fmt.Errorf("sending security result: %w", err)
			}
		}
	}

	var init [1]byte
	if _, err := io.ReadFull(rw, init[:]); err != nil {
		return false, minor, fmt.Errorf("reading ClientInit: %w", err)
	}
	return init[0] != 0, minor, nil
}
