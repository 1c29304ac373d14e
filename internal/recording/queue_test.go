package recording

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestQueueAlignsChunks: whatever the sizes written and wherever the
// writer takes the queue, the chunks hold the bytes in order, and each
// chunk ends at a multiple of its size in the file unless it is the last
// of what the writer took.
func TestQueueAlignsChunks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var q queue
	q.pos = 12
	var want, got bytes.Buffer
	want.WriteString("FBS 001.000\n")
	got.WriteString("FBS 001.000\n")
	sizes := []int{1, 100, 4 << 10, 60 << 10, 64 << 10, 200 << 10, 256<<10 + 12, 1 << 20}
	bigs := 0
	for batch := range 200 {
		for range 1 + rng.IntN(8) {
			p := make([]byte, sizes[rng.IntN(len(sizes))])
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			q.write(p)
			want.Write(p)
		}
		if q.pos != int64(want.Len()) {
			t.Fatalf("batch %d: pos %d, %d bytes queued", batch, q.pos, want.Len())
		}
		off := int64(got.Len())
		for i, c := range q.chunks {
			if len(*c) == 0 {
				t.Fatalf("batch %d: chunk %d is empty", batch, i)
			}
			if cap(*c) == bigChunkSize {
				bigs++
			}
			off += int64(len(*c))
			if i < len(q.chunks)-1 && off%int64(cap(*c)) != 0 {
				t.Fatalf("batch %d: chunk %d of %d ends at %d, not at a multiple of its %d bytes", batch, i, len(q.chunks), off, cap(*c))
			}
			got.Write(*c)
		}
		q.release()
		q = queue{pos: q.pos}
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatal("the chunks do not hold the bytes written, in order")
	}
	if bigs == 0 {
		t.Fatal("no bulk write took a big chunk")
	}
}
