package recording

import (
	"sync"

	"github.com/vncgate/caddy-vnc-proxy/internal/fbs"
)

// Chunks are the unit of a queue: fixed sizes shared by every recording
// through pools, so a burst never grows (and copies) a buffer and an idle
// console holds no queue memory at all. A console's small updates go into
// small chunks; a bulk of bytes (a full-screen update, a console read
// 256 KiB at a time) into big ones, which the writer writes whole.
const (
	chunkSize    = 64 << 10
	bigChunkSize = 256 << 10
	// bigChunkFrom is the least a write must still have to queue for
	// it to take a big chunk.
	bigChunkFrom = 128 << 10
)

var (
	chunkPool = sync.Pool{New: func() any {
		b := make([]byte, 0, chunkSize)
		return &b
	}}
	bigChunkPool = sync.Pool{New: func() any {
		b := make([]byte, 0, bigChunkSize)
		return &b
	}}
)

// queue is FBS file bytes waiting for the writer, in chunks; blocks may
// span chunks, since the file is one byte stream.
//
// Each chunk ends where the file's offset is a multiple of the chunk's
// size, so that writing a whole chunk covers whole, aligned pages of the
// file: the kernel caches such a write in large folios (ext4 and XFS do),
// which costs about half the CPU per byte of writes of the same size that
// straddle pages (measured on ext4: 0.16 s/GB for aligned 256 KiB writes,
// 0.32 for 64 KiB ones 12 bytes off).
type queue struct {
	chunks []*[]byte
	// pos is the offset in the file of the queue's next byte.
	pos int64
}

func (q *queue) write(p []byte) {
	for len(p) > 0 {
		n := len(q.chunks)
		if n == 0 || len(*q.chunks[n-1]) > 0 && q.pos%int64(cap(*q.chunks[n-1])) == 0 {
			q.chunks = append(q.chunks, q.newChunk(len(p)))
			n++
		}
		c := q.chunks[n-1]
		room := cap(*c) - int(q.pos%int64(cap(*c)))
		k := min(len(p), room)
		*c = append(*c, p[:k]...)
		p = p[k:]
		q.pos += int64(k)
	}
}

// newChunk returns an empty chunk for the next of n bytes to queue: a big
// one if n is a bulk and a big chunk would hold a small chunk's worth or
// more before its boundary.
func (q *queue) newChunk(n int) *[]byte {
	if n >= bigChunkFrom && bigChunkSize-q.pos%bigChunkSize >= chunkSize {
		return bigChunkPool.Get().(*[]byte)
	}
	return chunkPool.Get().(*[]byte)
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

// release returns the chunks to their pools and keeps the emptied list.
func (q *queue) release() {
	for i, c := range q.chunks {
		*c = (*c)[:0]
		if cap(*c) == bigChunkSize {
			bigChunkPool.Put(c)
		} else {
			chunkPool.Put(c)
		}
		q.chunks[i] = nil
	}
	q.chunks = q.chunks[:0]
}
