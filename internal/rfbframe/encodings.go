package rfbframe

import (
	"encoding/binary"
	"fmt"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// EncodingName names an encoding or pseudo-encoding for logs and errors.
func EncodingName(e int32) string {
	switch {
	case e >= rfb.EncodingJPEGQuality0 && e <= rfb.EncodingJPEGQuality0+9:
		return fmt.Sprintf("JPEG quality level %d", e-rfb.EncodingJPEGQuality0)
	case e >= rfb.EncodingCompressLevel0 && e <= rfb.EncodingCompressLevel0+9:
		return fmt.Sprintf("compression level %d", e-rfb.EncodingCompressLevel0)
	case e >= rfb.EncodingJPEGFineQuality0 && e <= rfb.EncodingJPEGFineQuality0+100:
		return fmt.Sprintf("JPEG fine quality level %d", e-rfb.EncodingJPEGFineQuality0)
	case e >= rfb.EncodingJPEGSubsampling0 && e <= rfb.EncodingJPEGSubsampling0+5:
		return fmt.Sprintf("JPEG subsampling level %d", e-rfb.EncodingJPEGSubsampling0)
	}
	if n, ok := encodingNames[e]; ok {
		return n
	}
	return "unknown"
}

var encodingNames = map[int32]string{
	rfb.EncodingRaw:                     "Raw",
	rfb.EncodingCopyRect:                "CopyRect",
	rfb.EncodingRRE:                     "RRE",
	rfb.EncodingCoRRE:                   "CoRRE",
	rfb.EncodingHextile:                 "Hextile",
	rfb.EncodingZlib:                    "zlib",
	rfb.EncodingTight:                   "Tight",
	8:                                   "zlibhex",
	rfb.EncodingZRLE:                    "ZRLE",
	17:                                  "ZYWRLE",
	rfb.EncodingJPEG:                    "JPEG",
	rfb.EncodingH264:                    "H.264",
	rfb.EncodingTightPNG:                "TightPNG",
	rfb.EncodingDesktopSize:             "DesktopSize",
	rfb.EncodingLastRect:                "LastRect",
	rfb.EncodingCursor:                  "Cursor",
	rfb.EncodingXCursor:                 "XCursor",
	rfb.EncodingQEMUPointerMotionChange: "QEMU pointer motion change",
	rfb.EncodingQEMUExtendedKeyEvent:    "QEMU extended key event",
	rfb.EncodingQEMUAudio:               "QEMU audio",
	rfb.EncodingQEMULEDState:            "QEMU LED state",
	rfb.EncodingGii:                     "gii",
	rfb.EncodingDesktopName:             "DesktopName",
	rfb.EncodingExtendedDesktopSize:     "ExtendedDesktopSize",
	rfb.EncodingXvp:                     "xvp",
	rfb.EncodingFence:                   "Fence",
	rfb.EncodingContinuousUpdates:       "ContinuousUpdates",
	rfb.EncodingCursorWithAlpha:         "CursorWithAlpha",
	rfb.EncodingExtendedMouseButtons:    "ExtendedMouseButtons",
	rfb.EncodingTightWithoutZlib:        "Tight without zlib",
	rfb.EncodingVMwareCursor:            "VMware cursor",
	rfb.EncodingExtendedClipboard:       "ExtendedClipboard",
}

// framedEncodings are the encodings and pseudo-encodings a client may be
// left to offer: the framer knows the length of everything a server
// answers them with. The index of each is its bit in Offer.
var framedEncodings = []int32{
	rfb.EncodingRaw, rfb.EncodingCopyRect, rfb.EncodingRRE, rfb.EncodingCoRRE, rfb.EncodingHextile,
	rfb.EncodingZlib, rfb.EncodingTight, rfb.EncodingZRLE, rfb.EncodingH264, rfb.EncodingTightPNG,

	rfb.EncodingDesktopSize, rfb.EncodingLastRect, rfb.EncodingCursor, rfb.EncodingXCursor,
	rfb.EncodingQEMUPointerMotionChange, rfb.EncodingQEMUExtendedKeyEvent, rfb.EncodingQEMUAudio,
	rfb.EncodingQEMULEDState, rfb.EncodingDesktopName, rfb.EncodingExtendedDesktopSize, rfb.EncodingXvp,
	rfb.EncodingFence, rfb.EncodingContinuousUpdates, rfb.EncodingCursorWithAlpha,
	rfb.EncodingExtendedMouseButtons, rfb.EncodingVMwareCursor, rfb.EncodingExtendedClipboard,
}

// levels reports whether e is one of the quality or compression levels,
// which only steer the server's choices within encodings that are framed.
func levels(e int32) bool {
	return e >= rfb.EncodingJPEGQuality0 && e <= rfb.EncodingJPEGQuality0+9 ||
		e >= rfb.EncodingCompressLevel0 && e <= rfb.EncodingCompressLevel0+9 ||
		e >= rfb.EncodingJPEGFineQuality0 && e <= rfb.EncodingJPEGFineQuality0+100 ||
		e >= rfb.EncodingJPEGSubsampling0 && e <= rfb.EncodingJPEGSubsampling0+5
}

// CanFrame reports whether a client may keep offering encoding e: the
// framer knows how long whatever a server sends for it is.
func CanFrame(e int32) bool {
	return levels(e) || framedIndex(e) >= 0
}

func framedIndex(e int32) int {
	for i, f := range framedEncodings {
		if f == e {
			return i
		}
	}
	return -1
}

// Offer is what a client's SetEncodings kept once rewritten: what the
// server may now use, which changes how the client's own messages are
// framed too (a 7-byte PointerEvent with ExtendedMouseButtons, a negative
// ClientCutText length with ExtendedClipboard).
type Offer struct {
	// Removed lists the encodings taken out of the offer, in the client's
	// order, for the log.
	Removed []int32

	kept uint64 // bit i: framedEncodings[i]
}

// Has reports whether the rewritten offer includes encoding e. Quality
// and compression levels are not tracked: Has is false for them.
func (o Offer) Has(e int32) bool {
	i := framedIndex(e)
	return i >= 0 && o.kept&(1<<i) != 0
}

// maxEncodings bounds the SetEncodings a caller should hold whole to
// rewrite; noVNC offers about thirty.
const maxEncodings = 1024

// RewriteSetEncodings appends to dst the client's SetEncodings message msg
// without the encodings the framer cannot frame (JPEG, unknown numbers,
// pseudo-encodings whose answers it does not know), and returns what the
// rewritten offer holds. msg must be exactly one whole SetEncodings
// message of at most 1024 encodings.
func RewriteSetEncodings(dst, msg []byte) ([]byte, Offer, error) {
	var o Offer
	if len(msg) < 4 || msg[0] != rfb.MsgSetEncodings {
		return dst, o, fmt.Errorf("rfbframe: not a SetEncodings message: %w", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint16(msg[2:]))
	if n > maxEncodings {
		return dst, o, fmt.Errorf("rfbframe: SetEncodings with %d encodings (limit %d): %w", n, maxEncodings, ErrMalformed)
	}
	if len(msg) != 4+4*n {
		return dst, o, fmt.Errorf("rfbframe: SetEncodings of %d encodings in %d bytes: %w", n, len(msg), ErrMalformed)
	}
	start := len(dst)
	dst = append(dst, msg[:4]...)
	kept := 0
	for i := range n {
		b := msg[4+4*i : 8+4*i]
		e := int32(binary.BigEndian.Uint32(b))
		if !CanFrame(e) {
			o.Removed = append(o.Removed, e)
			continue
		}
		if j := framedIndex(e); j >= 0 {
			o.kept |= 1 << j
		}
		dst = append(dst, b...)
		kept++
	}
	binary.BigEndian.PutUint16(dst[start+2:], uint16(kept))
	return dst, o, nil
}
