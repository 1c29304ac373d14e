package loadtarget

import "testing"

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
