// Package fbs reads and writes the FBS 001.000 file format, the framebuffer
// stream recordings of TightVNC's rfbproxy and vncrec that RFB players
// (rfbplayer, vnc2flv, noVNC's test playback) read: the header
// "FBS 001.000\n", then blocks, each a big-endian U32 length, that many
// bytes of data padded with zeros to a multiple of 4, and a big-endian U32
// timestamp in milliseconds since the recording started.
//
// The proxy records the RFB stream a browser receives in this format, so a
// recording plays in any FBS player as well as in the project's own.
package fbs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Header is the first thing in every FBS 001.000 file.
const Header = "FBS 001.000\n"

// DefaultMaxBlock is the block length a Reader accepts when none is given:
// far above what a recorder writes in one block (one read from a VNC
// server), far below what would hurt to hold.
const DefaultMaxBlock = 16 << 20

var (
	// ErrHeader: the data does not start with Header.
	ErrHeader = errors.New("fbs: not an FBS 001.000 file")
	// ErrBlockTooLong: a block announces a length over the Reader's limit.
	ErrBlockTooLong = errors.New("fbs: block longer than the limit")
)

// Block is one block of a recording: data the recorded client received, and
// when, in milliseconds since the recording started.
type Block struct {
	Data []byte
	Time uint32
}

// padding is how many zero bytes follow n bytes of data.
func padding(n int) int { return (4 - n%4) % 4 }

// BlockSize is the number of bytes a block of n data bytes takes in a
// file.
func BlockSize(n int) int { return 4 + n + padding(n) + 4 }

// AppendBlock appends the file form of one block to dst: the length, the
// data, its padding and the timestamp.
func AppendBlock(dst, data []byte, ms uint32) []byte {
	dst = AppendBlockHead(dst, len(data))
	dst = append(dst, data...)
	return AppendBlockTail(dst, len(data), ms)
}

// AppendBlockHead appends what comes before n bytes of block data: their
// length. With AppendBlockTail it lets a caller put the data itself
// wherever it likes (a recorder's queue of fixed-size chunks) without
// encoding blocks a second way.
func AppendBlockHead(dst []byte, n int) []byte {
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

// AppendBlockTail appends what comes after n bytes of block data: the
// padding to a multiple of 4 and the timestamp.
func AppendBlockTail(dst []byte, n int, ms uint32) []byte {
	dst = append(dst, make([]byte, padding(n))...)
	return binary.BigEndian.AppendUint32(dst, ms)
}

// Writer writes an FBS file: the header when created, then one block per
// WriteBlock. The caller supplies the timestamps, taken when the data was
// received rather than when it reaches the file.
type Writer struct {
	w   io.Writer
	buf []byte
}

// NewWriter writes the header to w and returns a Writer for the blocks.
func NewWriter(w io.Writer) (*Writer, error) {
	if _, err := io.WriteString(w, Header); err != nil {
		return nil, fmt.Errorf("writing FBS header: %w", err)
	}
	return &Writer{w: w}, nil
}

// WriteBlock writes one block with one call to the underlying writer.
func (w *Writer) WriteBlock(data []byte, ms uint32) error {
	w.buf = AppendBlock(w.buf[:0], data, ms)
	if _, err := w.w.Write(w.buf); err != nil {
		return fmt.Errorf("writing FBS block: %w", err)
	}
	return nil
}

// Reader reads the blocks of an FBS file one at a time. It holds one block
// at a time and never allocates for a length it has not checked against
// its limit, and only as much as the data that actually arrives, so a
// truncated or hostile file costs at most the limit.
type Reader struct {
	r      io.Reader
	max    int
	buf    bytes.Buffer
	offset int64
}

// NewReader checks the header of r and returns a Reader for its blocks.
// maxBlock bounds a block's length; 0 means DefaultMaxBlock.
func NewReader(r io.Reader, maxBlock int) (*Reader, error) {
	if maxBlock <= 0 {
		maxBlock = DefaultMaxBlock
	}
	var h [len(Header)]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrHeader
		}
		return nil, fmt.Errorf("reading FBS header: %w", err)
	}
	if string(h[:]) != Header {
		return nil, ErrHeader
	}
	return &Reader{r: r, max: maxBlock, offset: int64(len(Header))}, nil
}

// Next returns the next block. Its Data is valid until the next call. At
// the end of a well-formed file it returns io.EOF; a file that ends inside
// a block (a recording cut short by a crash or a full disk) gives
// io.ErrUnexpectedEOF after the last whole block.
func (r *Reader) Next() (Block, error) {
	var h [4]byte
	n, err := io.ReadFull(r.r, h[:])
	if err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return Block{}, io.EOF
		}
		return Block{}, r.cut(err)
	}
	length := binary.BigEndian.Uint32(h[:])
	if uint64(length) > uint64(r.max) {
		return Block{}, fmt.Errorf("%w: %d bytes at offset %d (limit %d)", ErrBlockTooLong, length, r.offset, r.max)
	}
	total := int64(length) + int64(padding(int(length))) + 4
	r.buf.Reset()
	// CopyN grows the buffer with the bytes that arrive, not with the
	// length announced.
	if _, err := io.CopyN(&r.buf, r.r, total); err != nil {
		return Block{}, r.cut(err)
	}
	b := r.buf.Bytes()
	r.offset += 4 + total
	return Block{Data: b[:length], Time: binary.BigEndian.Uint32(b[total-4:])}, nil
}

// ReadFile returns every block of the FBS file at path, each with a copy
// of its data: for tools and tests that look at a whole recording. An
// error after some blocks comes with those blocks.
func ReadFile(path string) ([]Block, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := NewReader(f, 0)
	if err != nil {
		return nil, err
	}
	var blocks []Block
	for {
		b, err := r.Next()
		if err == io.EOF {
			return blocks, nil
		}
		if err != nil {
			return blocks, err
		}
		blocks = append(blocks, Block{Data: bytes.Clone(b.Data), Time: b.Time})
	}
}

// Offset is the file offset just past the last whole block returned.
func (r *Reader) Offset() int64 { return r.offset }

func (r *Reader) cut(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("fbs: file ends inside the block at offset %d: %w", r.offset, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("reading FBS block at offset %d: %w", r.offset, err)
}
