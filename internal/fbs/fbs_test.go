package fbs

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// The file form, byte for byte, as rfbproxy writes it: header, then for
// each block the length, the data padded to 4 bytes, the timestamp.
func TestWriterBytes(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []Block{{[]byte("RFB 003.008\n"), 0}, {[]byte{1, 1}, 3}, {nil, 70000}, {[]byte("abcde"), 0x01020304}} {
		if err := w.WriteBlock(b.Data, b.Time); err != nil {
			t.Fatal(err)
		}
	}
	want := "FBS 001.000\n" +
		"\x00\x00\x00\x0cRFB 003.008\n\x00\x00\x00\x00" +
		"\x00\x00\x00\x02\x01\x01\x00\x00\x00\x00\x00\x03" +
		"\x00\x00\x00\x00\x00\x01\x11\x70" +
		"\x00\x00\x00\x05abcde\x00\x00\x00\x01\x02\x03\x04"
	if buf.String() != want {
		t.Fatalf("file is\n%s\nwant\n%s", hex.Dump(buf.Bytes()), hex.Dump([]byte(want)))
	}
	for n := range 9 {
		if got := len(AppendBlock(nil, make([]byte, n), 0)); got != BlockSize(n) {
			t.Errorf("BlockSize(%d) = %d, block is %d bytes", n, BlockSize(n), got)
		}
	}
}

// realStreams are VNC servers' streams captured by internal/rfbframe's
// tests (TigerVNC and QEMU: Tight, ZRLE, Hextile, RRE, zlib).
func realStreams(t testing.TB) map[string][]byte {
	files, err := filepath.Glob("../rfbframe/testdata/*.rfb")
	if err != nil || len(files) == 0 {
		t.Fatalf("no captured streams in ../rfbframe/testdata: %v", err)
	}
	m := make(map[string][]byte)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m[filepath.Base(f)] = b
	}
	return m
}

// Real streams, cut into blocks of every remainder modulo 4, come back
// whole and in order, whatever the chunks the file is read in.
func TestRoundTripRealStreams(t *testing.T) {
	for name, stream := range realStreams(t) {
		t.Run(name, func(t *testing.T) {
			var file bytes.Buffer
			w, err := NewWriter(&file)
			if err != nil {
				t.Fatal(err)
			}
			var blocks []Block
			for i, off := 0, 0; off < len(stream); i++ {
				n := min(1+(i*37)%1500, len(stream)-off)
				b := Block{Data: stream[off : off+n], Time: uint32(i * 7)}
				blocks = append(blocks, b)
				if err := w.WriteBlock(b.Data, b.Time); err != nil {
					t.Fatal(err)
				}
				off += n
			}
			readers := map[string]io.Reader{
				"whole":    bytes.NewReader(file.Bytes()),
				"one byte": iotest.OneByteReader(bytes.NewReader(file.Bytes())),
				"half":     iotest.HalfReader(bytes.NewReader(file.Bytes())),
				"data+err": iotest.DataErrReader(bytes.NewReader(file.Bytes())),
			}
			for rname, rd := range readers {
				r, err := NewReader(rd, 4096)
				if err != nil {
					t.Fatalf("%s: %v", rname, err)
				}
				var got []byte
				for i := 0; ; i++ {
					b, err := r.Next()
					if err == io.EOF {
						if i != len(blocks) {
							t.Fatalf("%s: %d blocks, want %d", rname, i, len(blocks))
						}
						break
					}
					if err != nil {
						t.Fatalf("%s: block %d: %v", rname, i, err)
					}
					if b.Time != blocks[i].Time || !bytes.Equal(b.Data, blocks[i].Data) {
						t.Fatalf("%s: block %d differs", rname, i)
					}
					got = append(got, b.Data...)
				}
				if !bytes.Equal(got, stream) {
					t.Fatalf("%s: stream differs after the round trip", rname)
				}
				if r.Offset() != int64(file.Len()) {
					t.Fatalf("%s: offset %d at the end, file is %d bytes", rname, r.Offset(), file.Len())
				}
			}
		})
	}
}

func TestReaderErrors(t *testing.T) {
	block := AppendBlock(nil, []byte("hello"), 9)
	cases := []struct {
		name   string
		file   string
		header error
		blocks int
		err    error
	}{
		{"empty", "", ErrHeader, 0, nil},
		{"short header", "FBS 001", ErrHeader, 0, nil},
		{"other version", "FBS 002.000\n", ErrHeader, 0, nil},
		{"no blocks", Header, nil, 0, io.EOF},
		{"one block", Header + string(block), nil, 1, io.EOF},
		{"cut in the length", Header + string(block) + "\x00\x00", nil, 1, io.ErrUnexpectedEOF},
		{"cut in the data", Header + string(block[:7]), nil, 0, io.ErrUnexpectedEOF},
		{"cut before the timestamp", Header + string(block[:len(block)-4]), nil, 0, io.ErrUnexpectedEOF},
		{"over the limit", Header + "\x00\x01\x00\x01abc", nil, 0, ErrBlockTooLong},
		{"at most uint32", Header + "\xff\xff\xff\xff", nil, 0, ErrBlockTooLong},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader([]byte(c.file)), 1<<16)
			if !errors.Is(err, c.header) || (err == nil) != (c.header == nil) {
				t.Fatalf("NewReader: %v, want %v", err, c.header)
			}
			if err != nil {
				return
			}
			for i := 0; i < c.blocks; i++ {
				if _, err := r.Next(); err != nil {
					t.Fatalf("block %d: %v", i, err)
				}
			}
			if _, err := r.Next(); !errors.Is(err, c.err) {
				t.Fatalf("after %d blocks: %v, want %v", c.blocks, err, c.err)
			}
		})
	}
}

// A read error other than the end of the data is passed on, with where.
func TestReaderPassesReadErrors(t *testing.T) {
	boom := errors.New("disk on fire")
	r, err := NewReader(io.MultiReader(bytes.NewReader([]byte(Header+"\x00\x00\x00\x08ab")), iotest.ErrReader(boom)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); !errors.Is(err, boom) {
		t.Fatalf("Next: %v, want %v", err, boom)
	}
}

// A block that announces the whole limit but ends early costs only what
// arrived.
func TestReaderAllocatesWhatArrives(t *testing.T) {
	file := []byte(Header + "\x00\xff\xff\xf0" + "tiny")
	var ms1, ms2 runtimeMem
	ms1.read()
	for range 20 {
		r, _ := NewReader(bytes.NewReader(file), 16<<20)
		_, _ = r.Next()
	}
	ms2.read()
	if perRun := (ms2.total - ms1.total) / 20; perRun > 64<<10 {
		t.Fatalf("a 16 MiB block of 4 bytes costs %d bytes per read", perRun)
	}
}

func BenchmarkWriteBlock(b *testing.B) {
	w, _ := NewWriter(io.Discard)
	data := make([]byte, 4096)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		_ = w.WriteBlock(data, 1)
	}
}
