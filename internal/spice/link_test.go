package spice

import (
	"encoding/binary"
	"errors"
	"testing"
)

// htmlLink is a link message as spice-html5 0.3 sends it for a display
// channel: common caps AUTH_SELECTION|MINI_HEADER, one channel caps word.
func htmlLink(connectionID uint32, typ ChannelType) []byte {
	b := []byte(Magic)
	b = binary.LittleEndian.AppendUint32(b, 2)
	b = binary.LittleEndian.AppendUint32(b, 2)
	b = binary.LittleEndian.AppendUint32(b, 26)
	b = binary.LittleEndian.AppendUint32(b, connectionID)
	b = append(b, byte(typ), 0)
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint32(b, 18)
	b = binary.LittleEndian.AppendUint32(b, 1<<CapProtocolAuthSelection|1<<CapMiniHeader)
	b = binary.LittleEndian.AppendUint32(b, 0x2f)
	return b
}

// feedSplit feeds data to a LinkParser in pieces cut at every cut point.
func feedSplit(lp *LinkParser, data []byte, cuts ...int) (consumed int, done bool, err error) {
	prev := 0
	for _, c := range append(cuts, len(data)) {
		if c < prev || c > len(data) {
			continue
		}
		n, d, e := lp.Feed(data[prev:c])
		consumed += n
		if e != nil || d {
			return consumed, d, e
		}
		prev = c
	}
	return consumed, false, nil
}

func TestLinkParser(t *testing.T) {
	msg := append(htmlLink(0xdeadbeef, ChannelDisplay), "ticket"...)
	for cut := 0; cut <= len(msg); cut++ {
		var lp LinkParser
		n, done, err := feedSplit(&lp, msg, cut)
		if err != nil || !done || n != len(msg)-len("ticket") {
			t.Fatalf("cut at %d: consumed %d, done %v, %v", cut, n, done, err)
		}
		want := Link{ConnectionID: 0xdeadbeef, Channel: ChannelDisplay, Minor: 2, MiniHeader: true, AuthSelection: true}
		if lp.Link() != want {
			t.Fatalf("cut at %d: %+v, want %+v", cut, lp.Link(), want)
		}
	}
	// One byte at a time.
	var lp LinkParser
	for i := range len(msg) {
		_, done, err := lp.Feed(msg[i : i+1])
		if err != nil {
			t.Fatal(err)
		}
		if done != (i == len(msg)-len("ticket")-1) {
			t.Fatalf("done %v at byte %d", done, i)
		}
		if done {
			break
		}
	}
}

func TestLinkParserAppendLink(t *testing.T) {
	for _, l := range []Link{
		{Channel: ChannelMain, Minor: 2, MiniHeader: true, AuthSelection: true},
		{ConnectionID: 7, Channel: ChannelCursor, ChannelID: 1, Minor: 2},
	} {
		var lp LinkParser
		if _, done, err := lp.Feed(AppendLink(nil, l, 1, 2)); !done || err != nil {
			t.Fatalf("%+v: done %v, %v", l, done, err)
		}
		if lp.Link() != l {
			t.Fatalf("%+v read back as %+v", l, lp.Link())
		}
	}
}

func TestLinkParserRefuses(t *testing.T) {
	good := htmlLink(0, ChannelMain)
	put := func(at int, v uint32) []byte {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint32(b[at:], v)
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
		at   int // bytes consumed when the error is seen
	}{
		{"HTTP", []byte("GET / HTTP/1.1\r\n"), 1},
		{"RFB", []byte("RFB 003.008\n"), 2},
		{"magic's last byte", []byte("REDX"), 4},
		{"major 1", put(4, 1), 16},
		{"size smaller than SpiceLinkMess", put(12, 17), 16},
		{"size larger than spice-server takes", put(12, MaxLinkSize+1), 16},
		{"size 4 GiB", put(12, 0xffffffff), 16},
		{"1025 common caps", put(22, 1025), 34},
		{"1025 channel caps", put(26, 1025), 34},
		{"caps past the end", put(22, 3), 34},
		{"caps offset inside the fixed part", put(30, 10), 34},
		{"caps offset past the end", put(30, 24), 34},
		{"channel type 0", func() []byte { b := append([]byte(nil), good...); b[20] = 0; return b }(), 34},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lp LinkParser
			n, done, err := lp.Feed(tc.data)
			if !errors.Is(err, ErrBadLink) || done {
				t.Fatalf("done %v, %v; want ErrBadLink", done, err)
			}
			if n != tc.at {
				t.Errorf("error after %d bytes, want %d", n, tc.at)
			}
			if _, _, again := lp.Feed(good); again == nil {
				t.Error("the error is not final")
			}
		})
	}
}

func TestLinkParserAllocs(t *testing.T) {
	msg := htmlLink(1, ChannelMain)
	if a := testing.AllocsPerRun(100, func() {
		var lp LinkParser
		_, _, _ = lp.Feed(msg)
	}); a != 0 {
		t.Errorf("%v allocations per link", a)
	}
}
