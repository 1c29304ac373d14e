package rfbframe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

func be16(v uint16) []byte   { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte   { return binary.BigEndian.AppendUint32(nil, v) }
func cat(b ...[]byte) []byte { return bytes.Join(b, nil) }
func fill(n int) []byte      { return bytes.Repeat([]byte{0xa5}, n) }

// rect is a rectangle header followed by its data.
func rect(x, y, w, h int, enc int32, data ...[]byte) []byte {
	return cat(be16(uint16(x)), be16(uint16(y)), be16(uint16(w)), be16(uint16(h)), be32(uint32(enc)), cat(data...))
}

// fbu is a FramebufferUpdate of the given rectangles.
func fbu(rects ...[]byte) []byte {
	return cat([]byte{rfb.MsgFramebufferUpdate, 0}, be16(uint16(len(rects))), cat(rects...))
}

// compact is Tight's compact length.
func compact(n int) []byte {
	switch {
	case n < 1<<7:
		return []byte{byte(n)}
	case n < 1<<14:
		return []byte{byte(n) | 0x80, byte(n >> 7)}
	}
	return []byte{byte(n) | 0x80, byte(n>>7) | 0x80, byte(n >> 14)}
}

func cutText(s string) []byte {
	return cat([]byte{rfb.MsgServerCutText, 0, 0, 0}, be32(uint32(len(s))), []byte(s))
}

// extClipboard is an Extended Clipboard ServerCutText with flags and data.
func extClipboard(flags uint32, data []byte) []byte {
	return cat([]byte{rfb.MsgServerCutText, 0, 0, 0}, be32(uint32(-int32(4+len(data)))), be32(flags), data)
}

var (
	pf32 = rfb.PixelFormat32
	pf16 = rfb.PixelFormat{BitsPerPixel: 16, Depth: 16, TrueColour: true, RedMax: 31, GreenMax: 63, BlueMax: 31, RedShift: 11, GreenShift: 5}
	pf8  = rfb.PixelFormat{BitsPerPixel: 8, Depth: 8, TrueColour: true, RedMax: 7, GreenMax: 7, BlueMax: 3, GreenShift: 3, BlueShift: 6}
	// 32 bits with 8-bit colours but depth 32: QEMU sends 3-byte TPIXELs,
	// TigerVNC and rfbproto 4.
	pfDepth32 = rfb.PixelFormat{BitsPerPixel: 32, Depth: 32, TrueColour: true, RedMax: 255, GreenMax: 255, BlueMax: 255, RedShift: 16, GreenShift: 8}
)

// message is one framed message, as the tests compare them.
type message struct {
	Kind      Kind
	Off, Len  int64
	Size      int64
	Clipboard uint32
}

// unended is the Size of a message whose end has not been framed yet.
const unended = -2

func (m message) String() string {
	return fmt.Sprintf("%v@%d+%d(size %d, clip %#x)", m.Kind, m.Off, m.Len, m.Size, m.Clipboard)
}

// frameChunks frames a stream that arrives in the given chunks the way a
// relay does: what Next leaves is kept and given again with the next
// chunk. It checks the spans' own consistency and that every byte is in
// exactly one message.
func frameChunks(t testing.TB, f *Framer, chunks [][]byte) ([]message, error) {
	t.Helper()
	var msgs []message
	var held []byte
	var total int64
	for _, c := range chunks {
		total += int64(len(c))
		p := append(held, c...)
		for len(p) > 0 {
			s, err := f.Next(p)
			if err != nil {
				if len(msgs) > 0 && msgs[len(msgs)-1].Size == unended {
					msgs = msgs[:len(msgs)-1]
				}
				return msgs, err
			}
			if s.Len == 0 {
				if len(p) >= MaxHeader {
					t.Fatalf("Next took nothing of %d bytes", len(p))
				}
				break
			}
			if s.Len > len(p) {
				t.Fatalf("span of %d bytes in %d", s.Len, len(p))
			}
			if s.Start {
				if len(msgs) > 0 && msgs[len(msgs)-1].Size == unended {
					t.Fatalf("message starts inside %v", msgs[len(msgs)-1])
				}
				msgs = append(msgs, message{Kind: s.Kind, Off: f.Offset() - int64(s.Len), Size: unended, Clipboard: s.Clipboard})
			} else if len(msgs) == 0 { // the framer was given a message's beginning before
				msgs = append(msgs, message{Kind: s.Kind, Off: -1, Size: unended, Clipboard: s.Clipboard})
			}
			m := &msgs[len(msgs)-1]
			if m.Kind != s.Kind || m.Clipboard != s.Clipboard {
				t.Fatalf("span of %v inside %v", s.Kind, m)
			}
			m.Len += int64(s.Len)
			if s.End {
				if s.Size != -1 && s.Size != m.Len {
					t.Fatalf("%v ended at %d bytes, its Size said %d", m.Kind, m.Len, s.Size)
				}
				m.Size = s.Size
			}
			p = p[s.Len:]
		}
		held = append([]byte(nil), p...)
	}
	if len(held) > 0 || !f.AtBoundary() {
		return msgs, fmt.Errorf("stream ends inside a message (%d bytes held)", len(held))
	}
	var sum int64
	for _, m := range msgs {
		sum += m.Len
	}
	resumed := len(msgs) > 0 && msgs[0].Off == -1
	if sum != total || f.Offset() != total && !resumed {
		t.Fatalf("messages cover %d bytes, offset %d, of %d", sum, f.Offset(), total)
	}
	return msgs, nil
}

func frameAll(t testing.TB, pf rfb.PixelFormat, stream []byte, splits ...int) ([]message, error) {
	t.Helper()
	f, err := NewFramer(pf)
	if err != nil {
		t.Fatal(err)
	}
	var chunks [][]byte
	prev := 0
	for _, s := range splits {
		chunks = append(chunks, stream[prev:s])
		prev = s
	}
	chunks = append(chunks, stream[prev:])
	return frameChunks(t, f, chunks)
}

type frameCase struct {
	name string
	pf   rfb.PixelFormat
	msgs [][]byte // each one message; nil entries are not allowed
	// err, when set, is a substring of the error expected at the last
	// message, and is is what it wraps.
	err string
	is  error
}

var hextileRect = rect(0, 0, 20, 18, rfb.EncodingHextile,
	[]byte{hextileRaw}, fill(16*16*4), // 16x16 raw
	[]byte{hextileBackground | hextileForeground | hextileAnySubrects}, fill(8), []byte{2}, fill(2*2), // 4x16
	[]byte{hextileBackground | hextileAnySubrects | hextileSubrectsColoured}, fill(4), []byte{3}, fill(3*6), // 16x2
	[]byte{0}) // 4x2, background carried over

var frameCases = []frameCase{
	{name: "Raw", msgs: [][]byte{fbu(rect(1, 2, 3, 2, rfb.EncodingRaw, fill(3*2*4)))}},
	{name: "Raw at 16 bits", pf: pf16, msgs: [][]byte{fbu(rect(1, 2, 3, 2, rfb.EncodingRaw, fill(3*2*2)))}},
	{name: "Raw at 8 bits", pf: pf8, msgs: [][]byte{fbu(rect(1, 2, 3, 2, rfb.EncodingRaw, fill(3*2)))}},
	{name: "empty Raw", msgs: [][]byte{fbu(rect(0, 0, 0, 5, rfb.EncodingRaw))}},
	{name: "no rectangles", msgs: [][]byte{fbu()}},
	{name: "CopyRect", msgs: [][]byte{fbu(rect(0, 0, 100, 100, rfb.EncodingCopyRect, be16(5), be16(6)))}},
	{name: "RRE", msgs: [][]byte{fbu(rect(0, 0, 100, 100, rfb.EncodingRRE, be32(2), fill(4), fill(2*12)))}},
	{name: "RRE at 16 bits", pf: pf16, msgs: [][]byte{fbu(rect(0, 0, 100, 100, rfb.EncodingRRE, be32(2), fill(2), fill(2*10)))}},
	{name: "CoRRE", msgs: [][]byte{fbu(rect(0, 0, 100, 100, rfb.EncodingCoRRE, be32(3), fill(4), fill(3*8)))}},
	{name: "Hextile", msgs: [][]byte{fbu(hextileRect)}},
	{name: "Hextile at 8 bits", pf: pf8, msgs: [][]byte{fbu(rect(0, 0, 17, 1, rfb.EncodingHextile,
		[]byte{hextileBackground | hextileForeground | hextileAnySubrects}, fill(2), []byte{1}, fill(2),
		[]byte{hextileRaw}, fill(1)))}},
	{name: "empty Hextile", msgs: [][]byte{fbu(rect(0, 0, 0, 0, rfb.EncodingHextile), rect(0, 0, 1, 1, rfb.EncodingRaw, fill(4)))}},
	{name: "Hextile with zlibhex bits", msgs: [][]byte{fbu(rect(0, 0, 16, 16, rfb.EncodingHextile, []byte{0x20}, fill(10)))},
		err: "Hextile subencoding 0x20", is: ErrMalformed},
	{name: "zlib", msgs: [][]byte{fbu(rect(0, 0, 64, 64, rfb.EncodingZlib, be32(5), fill(5)))}},
	{name: "ZRLE", msgs: [][]byte{fbu(rect(0, 0, 64, 64, rfb.EncodingZRLE, be32(300), fill(300)))}},
	{name: "H.264", msgs: [][]byte{fbu(rect(0, 0, 64, 64, rfb.EncodingH264, be32(7), be32(1), fill(7)))}},

	{name: "Tight fill", msgs: [][]byte{fbu(rect(0, 0, 64, 64, rfb.EncodingTight, []byte{0x8f}, fill(3)))}},
	{name: "Tight fill at 16 bits", pf: pf16, msgs: [][]byte{fbu(rect(0, 0, 64, 64, rfb.EncodingTight, []byte{0x80}, fill(2)))}},
	{name: "Tight JPEG", msgs: [][]byte{fbu(rect(0, 0, 64, 64, rfb.EncodingTight, []byte{0x90}, compact(200), fill(200)))}},
	{name: "Tight JPEG, 3-byte length", msgs: [][]byte{fbu(rect(0, 0, 640, 480, rfb.EncodingTight, []byte{0x90}, compact(70000), fill(70000)))}},
	{name: "Tight copy below 12 bytes", msgs: [][]byte{fbu(rect(0, 0, 1, 3, rfb.EncodingTight, []byte{0x00}, fill(9)))}},
	{name: "Tight copy of 12 bytes", msgs: [][]byte{fbu(rect(0, 0, 2, 2, rfb.EncodingTight, []byte{0x10}, compact(20), fill(20)))}},
	{name: "Tight copy filter byte", msgs: [][]byte{fbu(rect(0, 0, 8, 8, rfb.EncodingTight, []byte{0x41, 0}, compact(150), fill(150)))}},
	{name: "Tight copy at 16 bits", pf: pf16, msgs: [][]byte{fbu(rect(0, 0, 5, 1, rfb.EncodingTight, []byte{0x00}, fill(10)))}},
	{name: "Tight two-colour palette, raw", msgs: [][]byte{fbu(rect(0, 0, 10, 3, rfb.EncodingTight, []byte{0x60, 1, 1}, fill(2*3), fill(2*3)))}},
	{name: "Tight two-colour palette, compressed", msgs: [][]byte{fbu(rect(0, 0, 100, 3, rfb.EncodingTight, []byte{0x60, 1, 1}, fill(2*3), compact(30), fill(30)))}},
	{name: "Tight one-colour palette", msgs: [][]byte{fbu(rect(0, 0, 8, 8, rfb.EncodingTight, []byte{0x40, 1, 0}, fill(3), fill(8)))}},
	{name: "Tight palette of 5", msgs: [][]byte{fbu(rect(0, 0, 4, 4, rfb.EncodingTight, []byte{0x70, 1, 4}, fill(5*3), compact(9), fill(9)))}},
	{name: "Tight palette of 5 below 12 bytes", msgs: [][]byte{fbu(rect(0, 0, 11, 1, rfb.EncodingTight, []byte{0x70, 1, 4}, fill(5*3), fill(11)))}},
	{name: "Tight palette at 8 bits", pf: pf8, msgs: [][]byte{fbu(rect(0, 0, 11, 1, rfb.EncodingTight, []byte{0x40, 1, 2}, fill(3), fill(11)))}},
	{name: "Tight gradient", msgs: [][]byte{fbu(rect(0, 0, 10, 10, rfb.EncodingTight, []byte{0x40, 2}, compact(50), fill(50)))}},
	{name: "Tight gradient below 12 bytes", msgs: [][]byte{fbu(rect(0, 0, 3, 1, rfb.EncodingTight, []byte{0x40, 2}, fill(9)))}},
	{name: "Tight gradient at 8 bits", pf: pf8, msgs: [][]byte{fbu(rect(0, 0, 3, 1, rfb.EncodingTight, []byte{0x40, 2}, fill(9)))},
		err: "gradient", is: ErrMalformed},
	{name: "Tight unknown filter", msgs: [][]byte{fbu(rect(0, 0, 3, 1, rfb.EncodingTight, []byte{0x40, 3}, fill(9)))},
		err: "Tight filter 3", is: ErrCannotFrame},
	{name: "Tight without zlib", msgs: [][]byte{fbu(rect(0, 0, 3, 1, rfb.EncodingTight, []byte{0xa0}, fill(9)))},
		err: "Tight compression-control 0xa0", is: ErrCannotFrame},
	{name: "Tight undefined method", msgs: [][]byte{fbu(rect(0, 0, 3, 1, rfb.EncodingTight, []byte{0xb0}, fill(9)))},
		err: "compression-control 0xb0", is: ErrCannotFrame},
	{name: "Tight JPEG in an ambiguous format", pf: pfDepth32, msgs: [][]byte{fbu(rect(0, 0, 64, 64, rfb.EncodingTight, []byte{0x90}, compact(20), fill(20)))}},
	{name: "Tight fill in an ambiguous format", pf: pfDepth32, msgs: [][]byte{fbu(rect(0, 0, 64, 64, rfb.EncodingTight, []byte{0x80}, fill(3)))},
		err: "servers disagree", is: ErrCannotFrame},
	{name: "Tight copy in an ambiguous format", pf: pfDepth32, msgs: [][]byte{fbu(rect(0, 0, 1, 1, rfb.EncodingTight, []byte{0x00}, fill(3)))},
		err: "servers disagree", is: ErrCannotFrame},
	{name: "TightPNG", msgs: [][]byte{fbu(
		rect(0, 0, 64, 64, rfb.EncodingTightPNG, []byte{0x80}, fill(3)),
		rect(0, 0, 64, 64, rfb.EncodingTightPNG, []byte{0x90}, compact(300), fill(300)),
		rect(0, 0, 64, 64, rfb.EncodingTightPNG, []byte{0xa3}, compact(20000), fill(20000)))}},
	{name: "TightPNG with basic compression", msgs: [][]byte{fbu(rect(0, 0, 1, 1, rfb.EncodingTightPNG, []byte{0x00}, fill(3)))},
		err: "TightPNG compression-control 0x0", is: ErrCannotFrame},

	{name: "DesktopSize", msgs: [][]byte{fbu(rect(0, 0, 1024, 768, rfb.EncodingDesktopSize))}},
	{name: "ExtendedDesktopSize", msgs: [][]byte{fbu(rect(1, 0, 1024, 768, rfb.EncodingExtendedDesktopSize, []byte{2, 0, 0, 0}, fill(32)))}},
	{name: "DesktopName", msgs: [][]byte{fbu(rect(0, 0, 0, 0, rfb.EncodingDesktopName, be32(4), []byte("demo")))}},
	{name: "Cursor", msgs: [][]byte{fbu(rect(1, 1, 9, 2, rfb.EncodingCursor, fill(9*2*4), fill(2*2)))}},
	{name: "Cursor at 16 bits", pf: pf16, msgs: [][]byte{fbu(rect(1, 1, 8, 2, rfb.EncodingCursor, fill(8*2*2), fill(2)))}},
	{name: "empty Cursor", msgs: [][]byte{fbu(rect(0, 0, 0, 0, rfb.EncodingCursor))}},
	{name: "XCursor", msgs: [][]byte{fbu(rect(1, 1, 9, 2, rfb.EncodingXCursor, fill(6), fill(2*2*2)))}},
	{name: "empty XCursor", msgs: [][]byte{fbu(rect(0, 0, 0, 0, rfb.EncodingXCursor))}},
	{name: "CursorWithAlpha", pf: pf16, msgs: [][]byte{fbu(rect(2, 2, 5, 3, rfb.EncodingCursorWithAlpha, be32(uint32(rfb.EncodingRaw)), fill(5*3*4)))}},
	{name: "CursorWithAlpha in ZRLE", msgs: [][]byte{fbu(rect(2, 2, 5, 3, rfb.EncodingCursorWithAlpha, be32(uint32(rfb.EncodingZRLE)), be32(3), fill(3)))}},
	{name: "CursorWithAlpha in Hextile", pf: pf8, msgs: [][]byte{fbu(rect(2, 2, 2, 1, rfb.EncodingCursorWithAlpha, be32(uint32(rfb.EncodingHextile)), []byte{hextileRaw}, fill(2*4)))}},
	{name: "CursorWithAlpha in Tight", msgs: [][]byte{fbu(rect(2, 2, 5, 3, rfb.EncodingCursorWithAlpha, be32(uint32(rfb.EncodingTight)), []byte{0x80}, fill(4)))},
		err: "encoding 7 (Tight) inside CursorWithAlpha cannot be framed", is: ErrCannotFrame},
	{name: "VMware classic cursor", msgs: [][]byte{fbu(rect(0, 0, 4, 4, rfb.EncodingVMwareCursor, []byte{0, 0}, fill(2*4*4*4)))}},
	{name: "VMware classic cursor at 16 bits", pf: pf16, msgs: [][]byte{fbu(rect(0, 0, 4, 4, rfb.EncodingVMwareCursor, []byte{0, 0}, fill(2*4*4*2)))}},
	{name: "VMware alpha cursor", pf: pf16, msgs: [][]byte{fbu(rect(0, 0, 4, 4, rfb.EncodingVMwareCursor, []byte{1, 0}, fill(4*4*4)))}},
	{name: "VMware cursor of an unknown type", msgs: [][]byte{fbu(rect(0, 0, 4, 4, rfb.EncodingVMwareCursor, []byte{2, 0}))},
		err: "VMware cursor type 2", is: ErrCannotFrame},
	{name: "pseudo-encodings without data", msgs: [][]byte{fbu(
		rect(0, 0, 0, 0, rfb.EncodingQEMUExtendedKeyEvent),
		rect(0, 0, 0, 0, rfb.EncodingQEMUPointerMotionChange),
		rect(0, 0, 0, 0, rfb.EncodingQEMUAudio),
		rect(0, 0, 0, 0, rfb.EncodingExtendedMouseButtons))}},
	{name: "QEMU LED state", msgs: [][]byte{fbu(rect(0, 0, 0, 0, rfb.EncodingQEMULEDState, []byte{4}))}},
	{name: "LastRect", msgs: [][]byte{cat([]byte{0, 0, 0xff, 0xff},
		rect(0, 0, 1, 1, rfb.EncodingRaw, fill(4)), rect(0, 0, 1, 1, rfb.EncodingCopyRect, fill(4)),
		rect(0, 0, 0, 0, rfb.EncodingLastRect))}},
	{name: "an update of every encoding", msgs: [][]byte{fbu(
		rect(0, 0, 2, 1, rfb.EncodingRaw, fill(8)),
		hextileRect,
		rect(0, 0, 2, 2, rfb.EncodingTight, []byte{0x10}, compact(20), fill(20)),
		rect(0, 0, 64, 64, rfb.EncodingZRLE, be32(300), fill(300)),
		rect(1, 1, 9, 2, rfb.EncodingCursor, fill(9*2*4), fill(2*2)),
		rect(0, 0, 100, 100, rfb.EncodingRRE, be32(2), fill(4), fill(2*12)),
		rect(0, 0, 0, 0, rfb.EncodingDesktopName, be32(4), []byte("demo")))}},

	{name: "JPEG", msgs: [][]byte{fbu(rect(0, 0, 64, 64, rfb.EncodingJPEG, fill(100)))},
		err: "rfbframe: encoding 21 (JPEG) cannot be framed", is: ErrCannotFrame},
	{name: "unknown encoding", msgs: [][]byte{fbu(rect(0, 0, 64, 64, 1234, fill(100)))},
		err: "rfbframe: encoding 1234 (unknown) cannot be framed", is: ErrCannotFrame},
	{name: "Fence as a rectangle", msgs: [][]byte{fbu(rect(0, 0, 0, 0, rfb.EncodingFence))},
		err: "encoding -312 (Fence) cannot be framed", is: ErrCannotFrame},

	{name: "other messages", msgs: [][]byte{
		cat([]byte{rfb.MsgSetColourMapEntries, 0}, be16(0), be16(3), fill(18)),
		{rfb.MsgBell},
		cutText("hello"),
		cutText(""),
		{rfb.MsgEndOfContinuousUpdates},
		cat([]byte{rfb.MsgServerFence, 0, 0, 0}, be32(0x80000002), []byte{3}, []byte("abc")),
		cat([]byte{rfb.MsgServerFence, 0, 0, 0}, be32(0x80000002), []byte{0}),
		{rfb.MsgXvpServer, 0, 1, 1},
		{rfb.MsgQEMUServer, rfb.QEMUServerAudio, 0, rfb.QEMUAudioBegin},
		cat([]byte{rfb.MsgQEMUServer, rfb.QEMUServerAudio, 0, rfb.QEMUAudioData}, be32(40), fill(40)),
		{rfb.MsgQEMUServer, rfb.QEMUServerAudio, 0, rfb.QEMUAudioEnd},
		fbu(),
	}},
	{name: "Extended Clipboard", msgs: [][]byte{
		extClipboard(rfb.ClipboardCaps|rfb.ClipboardText|rfb.ClipboardHTML|rfb.ClipboardProvide|rfb.ClipboardNotify, cat(be32(10<<20), be32(2<<20))),
		extClipboard(rfb.ClipboardNotify|rfb.ClipboardText, nil),
		extClipboard(rfb.ClipboardProvide|rfb.ClipboardText, fill(33)),
		cutText("plain"),
	}},
	{name: "Extended Clipboard shorter than its flags", msgs: [][]byte{cat([]byte{rfb.MsgServerCutText, 0, 0, 0}, be32(0xfffffffe), fill(2))},
		err: "Extended Clipboard message of 2 bytes", is: ErrMalformed},
	{name: "ServerFence over 64 bytes", msgs: [][]byte{cat([]byte{rfb.MsgServerFence, 0, 0, 0}, be32(0), []byte{65}, fill(65))},
		err: "ServerFence with 65 bytes", is: ErrMalformed},
	{name: "QEMU message of another subtype", msgs: [][]byte{{rfb.MsgQEMUServer, 2, 0, 0}},
		err: "QEMU server message subtype 2 cannot be framed", is: ErrCannotFrame},
	{name: "QEMU audio of an unknown operation", msgs: [][]byte{{rfb.MsgQEMUServer, rfb.QEMUServerAudio, 0, 3}},
		err: "QEMU audio operation 3 cannot be framed", is: ErrCannotFrame},
	{name: "gii", msgs: [][]byte{cat([]byte{253, 0x81}, be16(4), fill(4))},
		err: "rfbframe: server message type 253 cannot be framed", is: ErrCannotFrame},
}

// kindOf is the kind a test message should be framed as.
func kindOf(m []byte) (Kind, uint32) {
	switch m[0] {
	case rfb.MsgFramebufferUpdate:
		return FramebufferUpdate, 0
	case rfb.MsgSetColourMapEntries:
		return SetColourMapEntries, 0
	case rfb.MsgBell:
		return Bell, 0
	case rfb.MsgServerCutText:
		if int32(binary.BigEndian.Uint32(m[4:])) < 0 && len(m) >= 12 {
			return ExtendedClipboard, binary.BigEndian.Uint32(m[8:])
		}
		return ServerCutText, 0
	case rfb.MsgEndOfContinuousUpdates:
		return EndOfContinuousUpdates, 0
	case rfb.MsgServerFence:
		return ServerFence, 0
	case rfb.MsgXvpServer:
		return Xvp, 0
	case rfb.MsgQEMUServer:
		return QEMUAudio, 0
	}
	return 0, 0
}

func (c frameCase) format() rfb.PixelFormat {
	if c.pf.BitsPerPixel == 0 {
		return pf32
	}
	return c.pf
}

func (c frameCase) want() []message {
	var want []message
	var off int64
	for _, m := range c.msgs {
		k, clip := kindOf(m)
		size := int64(len(m))
		if k == FramebufferUpdate {
			size = -1
		}
		want = append(want, message{Kind: k, Off: off, Len: int64(len(m)), Size: size, Clipboard: clip})
		off += int64(len(m))
	}
	if c.err != "" {
		want = want[:len(want)-1]
	}
	return want
}

func (c frameCase) check(t *testing.T, got []message, err error) {
	t.Helper()
	if c.err == "" {
		if err != nil {
			t.Fatalf("framing: %v", err)
		}
	} else if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, c.is) {
		t.Fatalf("error %v, want one with %q wrapping %v", err, c.err, c.is)
	}
	if want := c.want(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("framed\n%v\nwant\n%v", got, want)
	}
}

func TestFramer(t *testing.T) {
	for _, c := range frameCases {
		t.Run(c.name, func(t *testing.T) {
			stream := cat(c.msgs...)
			got, err := frameAll(t, c.format(), stream)
			c.check(t, got, err)
			if c.err != "" {
				return
			}
			// The stream is whole messages, so one framer can take it again
			// and again; framing never allocates.
			f, err := NewFramer(c.format())
			if err != nil {
				t.Fatal(err)
			}
			allocs := testing.AllocsPerRun(5, func() {
				for p := stream; len(p) > 0; {
					s, err := f.Next(p[:min(len(p), 100)])
					if err != nil || s.Len == 0 {
						t.Fatalf("span %+v, %v", s, err)
					}
					p = p[s.Len:]
				}
			})
			if allocs != 0 {
				t.Errorf("%v allocations", allocs)
			}
		})
	}
}

// TestFramerSplits: wherever the stream is cut, once or into single
// bytes, the same messages come out.
func TestFramerSplits(t *testing.T) {
	for _, c := range frameCases {
		t.Run(c.name, func(t *testing.T) {
			stream := cat(c.msgs...)
			for i := 1; i < len(stream); i++ {
				// Long payloads are counted the same wherever they are cut.
				if i > 2048 && i < len(stream)-2048 && i%251 != 0 {
					continue
				}
				got, err := frameAll(t, c.format(), stream, i)
				c.check(t, got, err)
				if t.Failed() {
					t.Fatalf("cut at %d", i)
				}
			}
			var cuts []int
			for i := 1; i < len(stream); i++ {
				cuts = append(cuts, i)
			}
			got, err := frameAll(t, c.format(), stream, cuts...)
			c.check(t, got, err)
		})
	}
}

func TestNoVNCsOfferRewritten(t *testing.T) {
	// noVNC 1.7's SetEncodings for a 24-bit screen, with H.264.
	offer := []int32{rfb.EncodingCopyRect, rfb.EncodingH264, rfb.EncodingTight, rfb.EncodingTightPNG, rfb.EncodingZRLE,
		rfb.EncodingJPEG, rfb.EncodingHextile, rfb.EncodingRRE, rfb.EncodingZlib, rfb.EncodingRaw,
		rfb.EncodingJPEGQuality0 + 6, rfb.EncodingCompressLevel0 + 2,
		rfb.EncodingDesktopSize, rfb.EncodingLastRect, rfb.EncodingQEMUExtendedKeyEvent, rfb.EncodingQEMULEDState,
		rfb.EncodingExtendedDesktopSize, rfb.EncodingXvp, rfb.EncodingFence, rfb.EncodingContinuousUpdates,
		rfb.EncodingDesktopName, rfb.EncodingExtendedClipboard, rfb.EncodingExtendedMouseButtons,
		rfb.EncodingVMwareCursor, rfb.EncodingCursor}
	// TigerVNC's viewer adds these.
	tiger := []int32{rfb.EncodingXCursor, rfb.EncodingCursorWithAlpha, rfb.EncodingJPEGFineQuality0 + 80,
		rfb.EncodingJPEGSubsampling0 + 1, rfb.EncodingQEMUPointerMotionChange, rfb.EncodingQEMUAudio, rfb.EncodingCoRRE}
	unframed := []int32{rfb.EncodingJPEG, rfb.EncodingGii, rfb.EncodingTightWithoutZlib, 8, 17, 1234, -1, 0x574d5665}

	msg := encodingsMessage(append(append(append([]int32(nil), offer...), tiger...), unframed...)...)
	prefix := []byte("before")
	got, o, err := RewriteSetEncodings(prefix, msg)
	if err != nil {
		t.Fatal(err)
	}
	var kept []int32
	for _, e := range append(append([]int32(nil), offer...), tiger...) {
		if e != rfb.EncodingJPEG {
			kept = append(kept, e)
		}
	}
	if want := cat(prefix, encodingsMessage(kept...)); !bytes.Equal(got, want) {
		t.Errorf("rewritten\n%x\nwant\n%x", got, want)
	}
	if want := append([]int32{rfb.EncodingJPEG}, unframed...); fmt.Sprint(o.Removed) != fmt.Sprint(want) {
		t.Errorf("removed %v, want %v", o.Removed, want)
	}
	for _, e := range kept {
		if !levels(e) && !o.Has(e) {
			t.Errorf("offer lacks %d (%s)", e, EncodingName(e))
		}
	}
	for _, e := range unframed {
		if o.Has(e) {
			t.Errorf("offer has %d (%s)", e, EncodingName(e))
		}
	}

	_, o, err = RewriteSetEncodings(nil, encodingsMessage(rfb.EncodingTight, rfb.EncodingRaw))
	if err != nil {
		t.Fatal(err)
	}
	if o.Has(rfb.EncodingExtendedMouseButtons) || o.Has(rfb.EncodingExtendedClipboard) || o.Removed != nil {
		t.Errorf("offer of Tight and Raw: %+v", o)
	}
}

func TestRewriteSetEncodingsRefuses(t *testing.T) {
	for name, msg := range map[string][]byte{
		"short":        {rfb.MsgSetEncodings, 0, 0},
		"not SetEnc":   {rfb.MsgSetPixelFormat, 0, 0, 0},
		"truncated":    cat([]byte{rfb.MsgSetEncodings, 0}, be16(2), be32(0)),
		"too long":     cat(encodingsMessage(0), be32(1)),
		"too many":     cat([]byte{rfb.MsgSetEncodings, 0}, be16(1025), make([]byte, 4*1025)),
		"empty slice":  nil,
		"one too many": cat([]byte{rfb.MsgSetEncodings, 0}, be16(1), make([]byte, 8)),
	} {
		if _, _, err := RewriteSetEncodings(nil, msg); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", name, err)
		}
	}
	got, _, err := RewriteSetEncodings(nil, encodingsMessage())
	if err != nil || !bytes.Equal(got, encodingsMessage()) {
		t.Errorf("no encodings: %x, %v", got, err)
	}
}

func encodingsMessage(encs ...int32) []byte {
	b := cat([]byte{rfb.MsgSetEncodings, 0}, be16(uint16(len(encs))))
	for _, e := range encs {
		b = append(b, be32(uint32(e))...)
	}
	return b
}

// TestHugeLengthsCostNothing: lengths of gigabytes are counted, not held.
func TestHugeLengthsCostNothing(t *testing.T) {
	chunk := make([]byte, 1<<20)
	for name, header := range map[string][]byte{
		"ServerCutText":       cat([]byte{rfb.MsgServerCutText, 0, 0, 0}, be32(0x7fffffff)),
		"Extended Clipboard":  cat([]byte{rfb.MsgServerCutText, 0, 0, 0}, be32(0x80000000), be32(rfb.ClipboardProvide)),
		"Raw":                 fbu(rect(0, 0, 65535, 65535, rfb.EncodingRaw)),
		"RRE of 4G subrects":  fbu(rect(0, 0, 65535, 65535, rfb.EncodingRRE, be32(0xffffffff), fill(4))),
		"zlib of 4 GiB":       fbu(rect(0, 0, 65535, 65535, rfb.EncodingZlib, be32(0xffffffff))),
		"QEMU audio of 4 GiB": cat([]byte{rfb.MsgQEMUServer, rfb.QEMUServerAudio, 0, rfb.QEMUAudioData}, be32(0xffffffff)),
	} {
		f, err := NewFramer(pf32)
		if err != nil {
			t.Fatal(err)
		}
		s, err := f.Next(cat(header, chunk))
		if err != nil || !s.Start || s.End || s.Len != len(header)+len(chunk) {
			t.Errorf("%s: span %+v, %v", name, s, err)
		}
		allocs := testing.AllocsPerRun(10, func() {
			if s, err := f.Next(chunk); err != nil || s.Len != len(chunk) || s.End {
				t.Fatalf("%s: span %+v, %v", name, s, err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations a chunk", name, allocs)
		}
	}
}

// TestPixelFormatChange: a format set in the middle of an update applies
// from the next message on.
func TestPixelFormatChange(t *testing.T) {
	f, err := NewFramer(pf32)
	if err != nil {
		t.Fatal(err)
	}
	first := fbu(rect(0, 0, 2, 2, rfb.EncodingRaw, fill(16)))
	second := fbu(rect(0, 0, 2, 2, rfb.EncodingRaw, fill(8)), rect(0, 0, 1, 1, rfb.EncodingTight, []byte{0x80}, fill(2)))
	s, err := f.Next(first[:10])
	if err != nil || s.Len != 10 {
		t.Fatalf("span %+v, %v", s, err)
	}
	if err := f.SetPixelFormat(pf16); err != nil {
		t.Fatal(err)
	}
	msgs, err := frameChunks(t, f, [][]byte{first[10:], second})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[1].Len != int64(len(second)) {
		t.Errorf("framed %v", msgs)
	}
	if err := f.SetPixelFormat(rfb.PixelFormat{BitsPerPixel: 24}); !errors.Is(err, ErrCannotFrame) {
		t.Errorf("24 bits per pixel: %v", err)
	}
	if _, err := NewFramer(rfb.PixelFormat{BitsPerPixel: 12}); !errors.Is(err, ErrCannotFrame) {
		t.Errorf("12 bits per pixel: %v", err)
	}
}

// TestPixelFormatFromAnotherGoroutine: the relay of the client's messages
// sets formats while the server's stream is framed (run with -race).
func TestPixelFormatFromAnotherGoroutine(t *testing.T) {
	f, err := NewFramer(pf32)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				if err := f.SetPixelFormat(pf32); err != nil {
					t.Error(err)
				}
			}
		}
	}()
	stream := bytes.Repeat(fbu(rect(0, 0, 2, 2, rfb.EncodingRaw, fill(16))), 1000)
	for p := stream; len(p) > 0; {
		s, err := f.Next(p[:min(len(p), 13)])
		if err != nil {
			t.Fatal(err)
		}
		p = p[s.Len:]
	}
	close(stop)
	<-done
}

func TestErrorSticks(t *testing.T) {
	f, _ := NewFramer(pf32)
	_, err := f.Next([]byte{7})
	if err == nil || !strings.Contains(err.Error(), "server message type 7 cannot be framed (message at byte 0 of the stream)") {
		t.Fatalf("error %v", err)
	}
	if _, err2 := f.Next([]byte{rfb.MsgBell}); err2 != err {
		t.Errorf("after an error: %v", err2)
	}
}
