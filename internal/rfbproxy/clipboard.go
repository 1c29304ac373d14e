package rfbproxy

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// DefaultMaxClipboard is the largest clipboard text a console with a
// clipboard policy passes when the policy names no MaxSize.
const DefaultMaxClipboard = 1 << 20

// Clipboard is a console's clipboard policy: which way clipboard text may
// go and how much of it. The zero value is the default: both ways, up to
// DefaultMaxClipboard; a console whose policy is the default needs no
// framing at all (Filtered).
type Clipboard struct {
	// NoCopy drops the VNC server's clipboard (ServerCutText, Extended
	// Clipboard provide and notify) on its way to the client, and the
	// client's Extended Clipboard requests for it.
	NoCopy bool
	// NoPaste drops the client's clipboard (ClientCutText, Extended
	// Clipboard provide and notify) on its way to the VNC server, and the
	// server's Extended Clipboard requests for it.
	NoPaste bool
	// MaxSize is the largest clipboard text passed either way, in bytes
	// (for Extended Clipboard, inflated). Default: DefaultMaxClipboard.
	MaxSize int64
}

// Filtered reports whether the policy differs from the default, so that
// both streams of the console must be framed to enforce it.
func (c Clipboard) Filtered() bool {
	return c.NoCopy || c.NoPaste || c.MaxSize != 0 && c.MaxSize != DefaultMaxClipboard
}

// Max is the largest clipboard text passed, in bytes.
func (c Clipboard) Max() int64 {
	if c.MaxSize > 0 {
		return c.MaxSize
	}
	return DefaultMaxClipboard
}

// The per-token grants a record may carry ("clipboard"): what the token
// may do of what the door allows.
const (
	ClipboardBoth  = "both"
	ClipboardCopy  = "copy"
	ClipboardPaste = "paste"
	ClipboardNone  = "none"
)

// Narrow is the policy c with a token's grant applied: a grant can only
// take directions away. An unknown grant allows nothing.
func (c Clipboard) Narrow(grant string) Clipboard {
	switch grant {
	case "", ClipboardBoth:
	case ClipboardCopy:
		c.NoPaste = true
	case ClipboardPaste:
		c.NoCopy = true
	default:
		c.NoCopy, c.NoPaste = true, true
	}
	return c
}

// verdict is what becomes of a clipboard message.
type verdict uint8

const (
	pass verdict = iota // forwarded as it comes
	drop                // skipped as it comes, never held
	hold                // held whole (at most holdBound) until its inflated size is known
)

// judge decides a clipboard message from the VNC server (fromServer) or
// from the client. size is the text's length for a plain cut text, and
// for Extended Clipboard (extended) the length of what follows its flags.
func (c Clipboard) judge(fromServer, extended bool, flags uint32, size int64) verdict {
	// The direction data goes in, and the one a request asks for.
	data, asked := !c.NoPaste, !c.NoCopy
	if fromServer {
		data, asked = asked, data
	}
	if !extended {
		if !data || size > c.Max() {
			return drop
		}
		return pass
	}
	// A viewer reads an action it knows (noVNC, TigerVNC): capabilities
	// first, whatever else is set, then one action per message.
	switch {
	case flags&rfb.ClipboardCaps != 0:
		// Which formats and actions each side knows, and a size limit
		// per format: no data.
		if size > 4*16 {
			return drop
		}
		return pass
	case flags&rfb.ClipboardProvide != 0:
		if !data || size > holdBound(c.Max()) {
			return drop
		}
		return hold
	case flags&rfb.ClipboardNotify != 0:
		if !data {
			return drop
		}
		return pass
	case flags&(rfb.ClipboardRequest|rfb.ClipboardPeek) != 0:
		if !asked {
			return drop
		}
		return pass
	}
	// No action: nothing a client or server would send.
	return drop
}

// MaxHeldClipboard bounds the Extended Clipboard provide a filter holds
// whole while it learns its inflated size: a larger one is dropped,
// whatever MaxSize allows.
const MaxHeldClipboard = 16 << 20

// holdBound is the most compressed bytes an Extended Clipboard provide
// may have when its formats inflate to at most limit bytes (zlib's
// stored blocks add 5 bytes per 64 KiB, each format 4 bytes of size), and
// at most MaxHeldClipboard.
func holdBound(limit int64) int64 { return min(limit+limit/4096+1024, MaxHeldClipboard) }

// extendedWithin reports whether the zlib payload of an Extended
// Clipboard provide inflates to formats of at most limit bytes in all
// (text without its terminating NUL). It inflates no more than the limit
// allows; a payload that is not what its flags say counts as too large.
func extendedWithin(flags uint32, payload []byte, limit int64) bool {
	zr, err := zlib.NewReader(bytes.NewReader(payload))
	if err != nil {
		return false
	}
	defer zr.Close()
	var total int64
	var size [4]byte
	for format := range 16 {
		if flags&(1<<format) == 0 {
			continue
		}
		if _, err := io.ReadFull(zr, size[:]); err != nil {
			return false
		}
		n := int64(binary.BigEndian.Uint32(size[:]))
		counted := n
		if format == 0 && n > 0 {
			counted-- // the text's NUL
		}
		if total += counted; total > limit {
			return false
		}
		if k, err := io.CopyN(io.Discard, zr, n); err != nil || k != n {
			return false
		}
	}
	return true
}

// String describes the policy for logs.
func (c Clipboard) String() string {
	dir := func(off bool) string {
		if off {
			return "off"
		}
		return "on"
	}
	return fmt.Sprintf("copy %s, paste %s, max %d", dir(c.NoCopy), dir(c.NoPaste), c.Max())
}
