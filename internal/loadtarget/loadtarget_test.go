package loadtarget

import (
	"bytes"
	"testing"
)

// TestStream: the table-driven stream is the defining formula, at any
// offset and across the period.
func TestStream(t *testing.T) {
	for _, off := range []int64{0, 1, 4095, streamPeriod - 7, 3*streamPeriod + 11} {
		p := make([]byte, 20000)
		Stream(p, off)
		for i, b := range p {
			x := uint64(off) + uint64(i)
			if want := byte(x*2654435761>>13) ^ byte(x>>8); b != want {
				t.Fatalf("offset %d+%d: %d, want %d", off, i, b, want)
			}
		}
	}
}

func BenchmarkStream(b *testing.B) {
	p := make([]byte, 64<<10)
	b.SetBytes(int64(len(p)))
	for i := 0; b.Loop(); i++ {
		Stream(p, int64(i)*int64(len(p)))
	}
}

// TestVerify: 'v' counts the bytes that match the stream, up to the first
// that does not.
func TestVerify(t *testing.T) {
	const n = 300000
	data := make([]byte, n)
	Stream(data, 0)
	if got := verify(bytes.NewReader(data), n); got != n {
		t.Errorf("intact stream: %d matched, want %d", got, n)
	}
	data[123456] ^= 1
	if got := verify(bytes.NewReader(data), n); got != 123456 {
		t.Errorf("corrupted stream: %d matched, want 123456", got)
	}
	if got := verify(bytes.NewReader(data[:1000]), n); got != 1000 {
		t.Errorf("short stream: %d matched, want 1000", got)
	}
}
