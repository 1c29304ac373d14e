package fbs

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReader: whatever the file, the Reader never panics, never returns a
// block over its limit, reads the whole file or stops at an error, and
// what it reads writes back to the same bytes.
func FuzzReader(f *testing.F) {
	f.Add([]byte(Header))
	f.Add([]byte(Header + string(AppendBlock(nil, []byte("RFB 003.008\n"), 0)) + string(AppendBlock(nil, []byte{1, 1, 0, 0, 0, 0}, 5))))
	f.Add([]byte(Header + "\x00\x00\x00\x03abc"))
	f.Add([]byte(Header + "\xff\xff\xff\xff"))
	f.Add([]byte(Header + "\x00\x00\x04\x01"))
	f.Add([]byte("FBS 001.001\n"))
	f.Fuzz(func(t *testing.T, file []byte) {
		const limit = 1024
		r, err := NewReader(bytes.NewReader(file), limit)
		if err != nil {
			return
		}
		var out bytes.Buffer
		w, _ := NewWriter(&out)
		for {
			b, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrBlockTooLong) {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			if len(b.Data) > limit {
				t.Fatalf("block of %d bytes over the limit %d", len(b.Data), limit)
			}
			_ = w.WriteBlock(b.Data, b.Time)
		}
		// Padding may hold anything in a foreign file; the rest must match.
		if r.Offset() != int64(out.Len()) {
			t.Fatalf("read %d bytes of blocks, they write back as %d", r.Offset(), out.Len())
		}
	})
}
