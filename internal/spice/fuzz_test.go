package spice

import (
	"bytes"
	"errors"
	"testing"
)

// cuts turns two fuzzed numbers into cut points inside data, so each target
// also checks that how the bytes are split changes nothing.
func cuts(n int, a, b uint16) []int {
	if n == 0 {
		return nil
	}
	x, y := int(a)%(n+1), int(b)%(n+1)
	return []int{min(x, y), max(x, y)}
}

// FuzzLinkParser: whatever a browser sends first, LinkParser returns (no
// panic), reads no more than a link message can be, and decides the same
// however the bytes are split.
func FuzzLinkParser(f *testing.F) {
	f.Add(htmlLink(0, ChannelMain), uint16(0), uint16(0))
	f.Add(htmlLink(0x1234, ChannelDisplay), uint16(3), uint16(20))
	f.Add(AppendLink(nil, Link{Channel: ChannelCursor, ConnectionID: 5}), uint16(17), uint16(33))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint16(1), uint16(2))
	f.Add([]byte("REDQ\x02\x00\x00\x00\x02\x00\x00\x00\xff\xff\xff\xff"), uint16(15), uint16(16))
	f.Fuzz(func(t *testing.T, data []byte, a, b uint16) {
		var whole LinkParser
		n1, done1, err1 := whole.Feed(data)
		var split LinkParser
		n2, done2, err2 := feedSplit(&split, data, cuts(len(data), a, b)...)
		if n1 != n2 || done1 != done2 || (err1 == nil) != (err2 == nil) || whole.Link() != split.Link() {
			t.Fatalf("whole: %d %v %v %+v; split: %d %v %v %+v", n1, done1, err1, whole.Link(), n2, done2, err2, split.Link())
		}
		if n1 > LinkHeaderSize+MaxLinkSize {
			t.Fatalf("read %d bytes of a link message", n1)
		}
		if err1 != nil && !errors.Is(err1, ErrBadLink) {
			t.Fatalf("error %v does not wrap ErrBadLink", err1)
		}
	})
}

// FuzzServerStream: whatever a SPICE server sends, ServerStream returns,
// and tells the same session id, link and start however the bytes are
// split.
func FuzzServerStream(f *testing.F) {
	f.Add(cat(linkReply(0), u32(0), miniMsg(MsgMainInit, mainInit(0x1234))), uint8(1), uint16(5), uint16(200))
	f.Add(cat(linkReply(0), u32(0), miniMsg(MsgPing, make([]byte, 12)), miniMsg(MsgMainInit, mainInit(9))), uint8(1), uint16(180), uint16(190))
	f.Add(cat(linkReply(0), u32(0), fullMsg(1, MsgMainInit, mainInit(0x1234))), uint8(0x81), uint16(0), uint16(0))
	f.Add(cat(linkReply(0), u32(0), miniMsg(MsgSetAck, make([]byte, 8))), uint8(2), uint16(1), uint16(198))
	f.Add(cat(linkReply(0), u32(LinkErrPermission)), uint8(3), uint16(2), uint16(3))
	f.Add(linkReply(LinkErrBadConnectionID), uint8(4), uint16(2), uint16(3))
	f.Fuzz(func(t *testing.T, data []byte, kind uint8, a, b uint16) {
		l := Link{Channel: ChannelType(kind & 0x7f), MiniHeader: kind&0x80 == 0}
		whole := NewServerStream(l)
		err1 := whole.Feed(data)
		split := NewServerStream(l)
		err2 := feedServer(&split, data, cuts(len(data), a, b)...)
		id1, ok1 := whole.SessionID()
		id2, ok2 := split.SessionID()
		if (err1 == nil) != (err2 == nil) || id1 != id2 || ok1 != ok2 || whole.Linked() != split.Linked() ||
			whole.DisplayStarted() != split.DisplayStarted() || whole.Done() != split.Done() {
			t.Fatalf("whole: %v %x %v %v %v; split: %v %x %v %v %v", err1, id1, ok1, whole.Linked(), whole.Done(), err2, id2, ok2, split.Linked(), split.Done())
		}
		var le *LinkError
		if err1 != nil && !errors.Is(err1, ErrBadReply) && !errors.Is(err1, ErrBadMessage) && !errors.As(err1, &le) {
			t.Fatalf("unexpected error %v", err1)
		}
		if ok1 && (id1 == 0 || l.Channel != ChannelMain) {
			t.Fatalf("session id %x on a %s channel", id1, l.Channel)
		}
	})
}

// FuzzClientStream: whatever a browser sends, ClientStream returns, passes
// on only bytes the browser sent, in order, at most as many, and passes the
// same bytes and decides the same however they are split; what Finish adds
// is a DISPLAY_INIT or nothing.
func FuzzClientStream(f *testing.F) {
	init := AppendDisplayInit(nil, true)
	f.Add(cat(htmlLink(9, ChannelDisplay), ticket, init, miniMsg(MsgcAckSync, u32(1))), false, uint16(30), uint16(170))
	f.Add(cat(htmlLink(9, ChannelDisplay), ticket, init, miniMsg(MsgcAckSync, u32(1))), true, uint16(0), uint16(180))
	f.Add(cat(htmlLink(9, ChannelDisplay), ticket, miniMsg(MsgcAckSync, u32(1))), false, uint16(1), uint16(2))
	f.Add(cat(htmlLink(9, ChannelDisplay), ticket[:40]), false, uint16(1), uint16(2))
	f.Add(cat(htmlLink(0, ChannelMain), ticket, []byte("anything")), false, uint16(3), uint16(4))
	f.Add(cat(AppendLink(nil, Link{Channel: ChannelDisplay}), ticket[4:], AppendDisplayInit(nil, false)), false, uint16(50), uint16(51))
	f.Add(cat(htmlLink(9, ChannelDisplay), u32(AuthSASL)), false, uint16(30), uint16(40))
	f.Fuzz(func(t *testing.T, data []byte, started bool, a, b uint16) {
		var whole, split ClientStream
		if started {
			whole.ServerStarted()
			split.ServerStarted()
		}
		out1, err1 := whole.Filter(nil, data)
		out2, err2 := filterSplit(&split, data, cuts(len(data), a, b)...)
		if !bytes.Equal(out1, out2) || (err1 == nil) != (err2 == nil) || whole.Passthrough() != split.Passthrough() ||
			whole.DisplayInitSent() != split.DisplayInitSent() {
			t.Fatalf("whole: %d bytes, %v; split: %d bytes, %v", len(out1), err1, len(out2), err2)
		}
		if !bytes.HasPrefix(data, out1) {
			t.Fatalf("passed %x, not a prefix of what was sent", out1)
		}
		if err1 != nil && !errors.Is(err1, ErrBadLink) && !errors.Is(err1, ErrBadMessage) {
			t.Fatalf("unexpected error %v", err1)
		}
		fin1, wait1 := whole.Finish(nil)
		fin2, wait2 := split.Finish(nil)
		if !bytes.Equal(fin1, fin2) || wait1 != wait2 {
			t.Fatalf("Finish whole %x %v, split %x %v", fin1, wait1, fin2, wait2)
		}
		if l, _ := whole.Link(); len(fin1) > 0 && !bytes.Equal(fin1, AppendDisplayInit(nil, l.MiniHeader)) {
			t.Fatalf("Finish adds %x", fin1)
		}
	})
}
