package spice

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// linkReply is a server's SpiceLinkHeader and SpiceLinkReply with error
// code and one common and one channel caps word.
func linkReply(code uint32) []byte {
	b := []byte(Magic)
	b = binary.LittleEndian.AppendUint32(b, 2)
	b = binary.LittleEndian.AppendUint32(b, 2)
	b = binary.LittleEndian.AppendUint32(b, linkReplyFixed+8)
	b = binary.LittleEndian.AppendUint32(b, code)
	b = append(b, make([]byte, pubKeySize)...)
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint32(b, linkReplyFixed)
	b = binary.LittleEndian.AppendUint32(b, 0xb)
	b = binary.LittleEndian.AppendUint32(b, 0x3)
	return b
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// miniMsg is a message with the mini header.
func miniMsg(typ uint16, body []byte) []byte {
	b := binary.LittleEndian.AppendUint16(nil, typ)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

// fullMsg is a message with the full SpiceDataHeader.
func fullMsg(serial uint64, typ uint16, body []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, serial)
	b = binary.LittleEndian.AppendUint16(b, typ)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	return append(b, body...)
}

func mainInit(session uint32) []byte {
	body := u32(session)
	for range 7 {
		body = binary.LittleEndian.AppendUint32(body, 1)
	}
	return body
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var (
	mainLink    = Link{Channel: ChannelMain, MiniHeader: true, AuthSelection: true}
	displayLink = Link{Channel: ChannelDisplay, ConnectionID: 9, MiniHeader: true, AuthSelection: true}
)

// feedServer feeds data to s, cut at every cut point.
func feedServer(s *ServerStream, data []byte, cuts ...int) error {
	prev := 0
	for _, c := range append(cuts, len(data)) {
		if c < prev || c > len(data) {
			continue
		}
		if err := s.Feed(data[prev:c]); err != nil {
			return err
		}
		prev = c
	}
	return nil
}

func TestServerStreamMainInit(t *testing.T) {
	for _, tc := range []struct {
		name string
		link Link
		data []byte
	}{
		{"first message", mainLink, cat(linkReply(0), u32(0), miniMsg(MsgMainInit, mainInit(0x1234)), miniMsg(MsgChannelsList, u32(0)))},
		{"after a ping", mainLink, cat(linkReply(0), u32(0), miniMsg(MsgPing, make([]byte, 12)), miniMsg(MsgNotify, nil), miniMsg(MsgMainInit, mainInit(0x1234)))},
		{"full header", Link{Channel: ChannelMain}, cat(linkReply(0), u32(0), fullMsg(1, MsgMainInit, mainInit(0x1234)))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for cut := 0; cut <= len(tc.data); cut++ {
				s := NewServerStream(tc.link)
				if err := feedServer(&s, tc.data, cut, cut+1, cut+7); err != nil {
					t.Fatalf("cut at %d: %v", cut, err)
				}
				if id, ok := s.SessionID(); !ok || id != 0x1234 || !s.Linked() || !s.Done() {
					t.Fatalf("cut at %d: session %#x %v, linked %v, done %v", cut, id, ok, s.Linked(), s.Done())
				}
			}
		})
	}
}

func TestServerStreamOtherChannels(t *testing.T) {
	s := NewServerStream(Link{Channel: ChannelInputs, MiniHeader: true})
	if err := s.Feed(cat(linkReply(0), u32(0))); err != nil || !s.Linked() || !s.Done() {
		t.Fatalf("inputs: %v, linked %v, done %v", err, s.Linked(), s.Done())
	}
	d := NewServerStream(displayLink)
	if err := d.Feed(cat(linkReply(0), u32(0))); err != nil || !d.Linked() || d.Done() || d.DisplayStarted() {
		t.Fatalf("display before its first message: %v, linked %v, done %v, started %v", err, d.Linked(), d.Done(), d.DisplayStarted())
	}
	if err := d.Feed(miniMsg(MsgSetAck, make([]byte, 8))[:1]); err != nil || !d.DisplayStarted() || !d.Done() {
		t.Fatalf("display after its first byte: %v, started %v, done %v", err, d.DisplayStarted(), d.Done())
	}
}

func TestServerStreamRefuses(t *testing.T) {
	badSize := func(size uint32) []byte {
		b := linkReply(0)
		binary.LittleEndian.PutUint32(b[12:], size)
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
		is   error
		code uint32
	}{
		{"not SPICE", []byte("RFB 003.008\n"), ErrBadReply, 0},
		{"HTML", []byte("<html>"), ErrBadReply, 0},
		{"major 1", func() []byte { b := linkReply(0); b[4] = 1; return b }(), ErrBadReply, 0},
		{"reply smaller than SpiceLinkReply", badSize(linkReplyFixed - 1), ErrBadReply, 0},
		{"reply of 4 GiB", badSize(0xffffffff), ErrBadReply, 0},
		{"link refused", linkReply(LinkErrVersionMismatch), nil, LinkErrVersionMismatch},
		{"ticket refused", cat(linkReply(0), u32(LinkErrPermission)), nil, LinkErrPermission},
		{"MAIN_INIT too short", cat(linkReply(0), u32(0), miniMsg(MsgMainInit, u32(5))), ErrBadMessage, 0},
		{"MAIN_INIT with session 0", cat(linkReply(0), u32(0), miniMsg(MsgMainInit, mainInit(0))), ErrBadMessage, 0},
		{"too many messages first", cat(linkReply(0), u32(0), bytes.Repeat(miniMsg(MsgPing, nil), maxMessagesBeforeInit+1)), ErrBadMessage, 0},
		{"a huge message first", cat(linkReply(0), u32(0), miniMsg(MsgNotify, nil)[:2], u32(0xffffffff)), ErrBadMessage, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for cut := 0; cut <= len(tc.data); cut++ {
				s := NewServerStream(mainLink)
				err := feedServer(&s, tc.data, cut)
				var le *LinkError
				switch {
				case tc.is != nil && !errors.Is(err, tc.is):
					t.Fatalf("cut at %d: %v, want %v", cut, err, tc.is)
				case tc.is == nil && (!errors.As(err, &le) || le.Code != tc.code):
					t.Fatalf("cut at %d: %v, want link error %d", cut, err, tc.code)
				}
				if s.Feed([]byte{0}) == nil {
					t.Fatal("the error is not final")
				}
			}
		})
	}
}

// filterSplit runs data through a ClientStream cut at every cut point.
func filterSplit(c *ClientStream, data []byte, cuts ...int) ([]byte, error) {
	var out []byte
	prev := 0
	for _, cut := range append(cuts, len(data)) {
		if cut < prev || cut > len(data) {
			continue
		}
		var err error
		out, err = c.Filter(out, data[prev:cut])
		if err != nil {
			return out, err
		}
		prev = cut
	}
	return out, nil
}

var ticket = cat(u32(AuthSpice), bytes.Repeat([]byte{0xa5}, TicketSize))

func TestClientStreamDisplay(t *testing.T) {
	link := htmlLink(9, ChannelDisplay)
	init := AppendDisplayInit(nil, true)
	ackSync := miniMsg(MsgcAckSync, u32(1))
	for cut := 0; cut <= len(link)+len(ticket)+len(init)+len(ackSync); cut++ {
		var c ClientStream
		out, err := filterSplit(&c, cat(link, ticket, init, ackSync), cut)
		if err != nil {
			t.Fatal(err)
		}
		// Everything up to DISPLAY_INIT passes; ACK_SYNC waits for the
		// server.
		if want := cat(link, ticket, init); !bytes.Equal(out, want) {
			t.Fatalf("cut at %d: passed %d bytes, want %d", cut, len(out), len(want))
		}
		if !c.DisplayInitSent() || c.Passthrough() {
			t.Fatalf("cut at %d: init sent %v, passthrough %v", cut, c.DisplayInitSent(), c.Passthrough())
		}
		if fin, wait := c.Finish(nil); len(fin) != 0 || !wait {
			t.Fatalf("cut at %d: Finish %x, wait %v; want nothing and a wait", cut, fin, wait)
		}
		c.ServerStarted()
		out, err = c.Filter(nil, []byte("more"))
		if err != nil || !bytes.Equal(out, cat(ackSync, []byte("more"))) || !c.Passthrough() {
			t.Fatalf("cut at %d: after the start %q, %v, passthrough %v", cut, out, err, c.Passthrough())
		}
		if fin, wait := c.Finish(nil); len(fin) != 0 || wait {
			t.Fatalf("cut at %d: Finish after the start %x, %v", cut, fin, wait)
		}
	}
}

func TestClientStreamFinish(t *testing.T) {
	link := htmlLink(9, ChannelDisplay)
	init := AppendDisplayInit(nil, true)
	for _, tc := range []struct {
		name string
		link []byte
		sent []byte
		fin  bool // Finish adds a DISPLAY_INIT
		wait bool
	}{
		{"half a link", link, link[:20], false, false},
		{"half a ticket", link, cat(link, ticket[:50]), false, false},
		{"the ticket", link, cat(link, ticket), true, true},
		{"half a DISPLAY_INIT", link, cat(link, ticket, init[:10]), true, true},
		{"DISPLAY_INIT", link, cat(link, ticket, init), false, true},
		{"inputs", htmlLink(9, ChannelInputs), cat(htmlLink(9, ChannelInputs), ticket), false, false},
		{"main", htmlLink(0, ChannelMain), cat(htmlLink(0, ChannelMain), ticket), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c ClientStream
			out, err := c.Filter(nil, tc.sent)
			if err != nil {
				t.Fatal(err)
			}
			fin, wait := c.Finish(nil)
			if tc.fin != (len(fin) > 0) || wait != tc.wait {
				t.Fatalf("Finish %x, wait %v", fin, wait)
			}
			if len(fin) > 0 && !bytes.Equal(fin, init) {
				t.Fatalf("Finish %x, want %x", fin, init)
			}
			// What reached the server plus Finish is whole messages.
			if tc.name == "half a DISPLAY_INIT" && !bytes.Equal(out, cat(link, ticket)) {
				t.Fatalf("a partial DISPLAY_INIT passed: %x", out[len(link)+len(ticket):])
			}
		})
	}
}

func TestClientStreamRefuses(t *testing.T) {
	link := htmlLink(9, ChannelDisplay)
	hugeWindow := AppendDisplayInit(nil, true)
	binary.LittleEndian.PutUint32(hugeWindow[MiniHeaderSize+10:], glzMaxWindow+1)
	bigInit := miniMsg(MsgcDisplayInit, make([]byte, maxDisplayInitBody+1))
	for _, tc := range []struct {
		name   string
		data   []byte
		passed int // bytes that reached the server
	}{
		{"SASL", cat(link, u32(AuthSASL)), len(link)},
		{"another message first", cat(link, ticket, miniMsg(MsgcAckSync, u32(1))), len(link) + len(ticket)},
		{"a GLZ window too large", cat(link, ticket, hugeWindow), len(link) + len(ticket)},
		{"DISPLAY_INIT too short", cat(link, ticket, miniMsg(MsgcDisplayInit, make([]byte, 13))), len(link) + len(ticket)},
		{"DISPLAY_INIT too long", cat(link, ticket, bigInit), len(link) + len(ticket)},
		{"too much before the server starts", cat(link, ticket, AppendDisplayInit(nil, true), make([]byte, maxHeldAfterInit+1)), len(link) + len(ticket) + 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for cut := 0; cut <= len(tc.data); cut += 3 {
				var c ClientStream
				out, err := filterSplit(&c, tc.data, cut)
				if !errors.Is(err, ErrBadMessage) {
					t.Fatalf("cut at %d: %v", cut, err)
				}
				if len(out) != tc.passed {
					t.Fatalf("cut at %d: %d bytes passed, want %d", cut, len(out), tc.passed)
				}
				if _, again := c.Filter(nil, []byte{0}); again == nil {
					t.Fatal("the error is not final")
				}
			}
		})
	}
}

func TestClientStreamNoAuthSelection(t *testing.T) {
	l := Link{Channel: ChannelDisplay, ConnectionID: 3}
	data := cat(AppendLink(nil, l), bytes.Repeat([]byte{1}, TicketSize), AppendDisplayInit(nil, false))
	var c ClientStream
	out, err := c.Filter(nil, data)
	if err != nil || !bytes.Equal(out, data) || !c.DisplayInitSent() {
		t.Fatalf("%v, %d of %d bytes, init sent %v", err, len(out), len(data), c.DisplayInitSent())
	}
}

func TestStreamsAllocs(t *testing.T) {
	client := cat(htmlLink(9, ChannelDisplay), ticket, AppendDisplayInit(nil, true))
	server := cat(linkReply(0), u32(0), miniMsg(MsgMainInit, mainInit(7)))
	dst := make([]byte, 0, 1024)
	if a := testing.AllocsPerRun(100, func() {
		var c ClientStream
		_, _ = c.Filter(dst, client)
		s := NewServerStream(mainLink)
		_ = s.Feed(server)
	}); a != 0 {
		t.Errorf("%v allocations per channel start", a)
	}
}

// TestClientStreamHoldsLink: nothing of a link message passes before it is
// complete and valid, however it is split.
func TestClientStreamHoldsLink(t *testing.T) {
	link := htmlLink(9, ChannelInputs)
	for cut := 1; cut < len(link); cut++ {
		var c ClientStream
		if out, err := c.Filter(nil, link[:cut]); err != nil || len(out) != 0 {
			t.Fatalf("cut at %d: %x, %v", cut, out, err)
		}
		out, err := c.Filter(nil, cat(link[cut:], ticket[:6]))
		if err != nil || !bytes.Equal(out, cat(link, ticket[:6])) {
			t.Fatalf("cut at %d: %x, %v", cut, out, err)
		}
	}
	var c ClientStream
	if out, _ := c.Filter(nil, link[:20]); len(out) != 0 {
		t.Fatal("half a link passed")
	}
	bad := append([]byte(nil), link[20:]...)
	bad[0] = 0 // channel type 0
	if out, err := c.Filter(nil, bad); !errors.Is(err, ErrBadLink) || len(out) != 0 {
		t.Fatalf("a bad link: %x, %v", out, err)
	}
}
