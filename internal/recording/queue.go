package recording

import (
	"sync"

	"github.com/vncgate/caddy-vnc-proxy/internal/fbs"
)

// chunkSize is the unit of a queue. Fixed-size chunks shared by every
// recording through a pool mean a burst never grows (and copies) a buffer,
// and an idle console holds no queue memory at all.
const chunkSize = 64 << 10

var chunkPool = sync.Pool{New: func() any {
	b := make([]byte, 0, chunkSize)
	return &b
}}

// queue is FBS file bytes waiting for the writer, in chunks; blocks may
// span chunks, since the file is one byte stream.
type queue struct {
	chunks []*[]byte
}

func (q *queue) write(p []byte) {
	for len(p) > 0 {
		n := len(q.chunks)
		if n == 0 || len(*q.chunks[n-1]) == chunkSize {
			q.chunks = append(q.chunks, chunkPool.Get().(*[]byte))
			n++
		}
		c := q.chunks[n-1]
		k := min(len(p), chunkSize-len(*c))
		*c = append(*c, p[:k]...)
		p = p[k:]
	}
}

// appendBlock queues one block.
func (q *queue) appendBlock(data []byte, ms uint32) {
	var frame [12]byte
	q.write(fbs.AppendBlockHead(frame[:0], len(data)))
	q.write(data)
	q.write(fbs.AppendBlockTail(frame[:0], len(data), ms))
}

func (q *queue) len() int {
	n := 0
	for _, c := range q.chunks {
		n += len(*c)
	}
	return n
}

// release returns the chunks to the pool and keeps the emptied list.
func (q *queue) release() {
	for i, c := range q.chunks {
		*c = (*c)[:0]
		chunkPool.Put(c)
		q.chunks[i] = nil
	}
	q.chunks = q.chunks[:0]
}
