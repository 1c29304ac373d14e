package loadtarget

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// The framebuffer a Framed server announces in its ServerInit.
const (
	FramedWidth  = 1024
	FramedHeight = 768
	framedName   = "loadtarget"
)

// framedRows is the most rows of one rectangle: 64 KiB of pixels.
const framedRows = 16

// msgServerFence is the RFB message type of ServerFence.
const msgServerFence = 248

// AppendServerInit appends the ServerInit a Framed server sends.
func AppendServerInit(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, FramedWidth)
	dst = binary.BigEndian.AppendUint16(dst, FramedHeight)
	pf := rfb.PixelFormat32.Marshal()
	dst = append(dst, pf[:]...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(framedName)))
	return append(dst, framedName...)
}

// handleFramed serves a logged-in RFB client as a VNC server: ServerInit,
// then one command whose output goes out as server messages.
func (s *Server) handleFramed(c net.Conn, r *bufio.Reader) error {
	if _, err := c.Write(AppendServerInit(nil)); err != nil {
		return err
	}
	var in io.Reader = r
	if next, err := r.Peek(1); err == nil && next[0] == msgClientFence {
		in = bufio.NewReaderSize(&fenceReader{r: r}, 64<<10)
	}
	var cmd [1]byte
	if _, err := io.ReadFull(in, cmd[:]); err != nil {
		return err
	}
	switch cmd[0] {
	case 'e':
		buf := make([]byte, 16<<10)
		var out []byte
		for {
			n, err := in.Read(buf)
			if n > 0 {
				out = appendFences(out[:0], buf[:n], msgServerFence)
				if _, err := c.Write(out); err != nil {
					return err
				}
			}
			if err != nil {
				return err
			}
		}
	case 'i':
		_, err := io.Copy(io.Discard, in)
		return err
	case 's', 'v':
		var hdr [8]byte
		if _, err := io.ReadFull(in, hdr[:]); err != nil {
			return err
		}
		n := int64(binary.BigEndian.Uint64(hdr[:]))
		if cmd[0] == 's' {
			return sendFramed(c, n)
		}
		answer := binary.BigEndian.AppendUint64(nil, uint64(verify(in, n)))
		_, err := c.Write(appendFences(nil, answer, msgServerFence))
		return err
	default:
		return errors.New("loadtarget: unknown command")
	}
}

// sendFramed sends n bytes of Stream as the pixels of FramebufferUpdate
// messages, one Raw rectangle of up to 64 KiB each (1024 pixels wide, 4
// bytes a pixel); the last bytes that make no whole pixel go in a
// ServerFence.
func sendFramed(w io.Writer, n int64) error {
	const hdr = 4 + 12
	buf := make([]byte, hdr+FramedWidth*framedRows*4)
	y := 0
	for off := int64(0); off < n; {
		pixels := min((n-off)/4, FramedWidth*framedRows)
		if pixels == 0 {
			rest := make([]byte, n-off)
			Stream(rest, off)
			_, err := w.Write(appendFences(nil, rest, msgServerFence))
			return err
		}
		width, height := int64(FramedWidth), pixels/FramedWidth
		if height == 0 {
			width, height = pixels, 1
		}
		if y+int(height) > FramedHeight {
			y = 0
		}
		k := width * height * 4
		b := buf[:hdr+k]
		b[0], b[1] = 0, 0 // FramebufferUpdate, padding
		binary.BigEndian.PutUint16(b[2:], 1)
		binary.BigEndian.PutUint16(b[4:], 0)
		binary.BigEndian.PutUint16(b[6:], uint16(y))
		binary.BigEndian.PutUint16(b[8:], uint16(width))
		binary.BigEndian.PutUint16(b[10:], uint16(height))
		binary.BigEndian.PutUint32(b[12:], 0) // Raw
		Stream(b[hdr:], off)
		if _, err := w.Write(b); err != nil {
			return err
		}
		off += k
		y += int(height)
	}
	return nil
}

// FramedReader reads what a Framed server sends after ServerInit and
// returns the payloads, joined: the pixels of Raw rectangles and the
// payloads of ServerFence messages, so that a client reads 's', 'e' and
// 'v' as from any other server. Any other message, encoding or pixel
// format is an error. It reads the pixels straight into the caller's
// buffer.
type FramedReader struct {
	R     io.Reader
	left  int64 // payload bytes of the current rectangle or fence
	rects int   // rectangles of the current update still to come
	hdr   [12]byte
}

func (f *FramedReader) Read(p []byte) (int, error) {
	for f.left == 0 {
		if f.rects > 0 {
			if _, err := io.ReadFull(f.R, f.hdr[:12]); err != nil {
				return 0, err
			}
			f.rects--
			if enc := int32(binary.BigEndian.Uint32(f.hdr[8:])); enc != 0 {
				return 0, fmt.Errorf("loadtarget: a rectangle in encoding %d, not Raw", enc)
			}
			w, h := binary.BigEndian.Uint16(f.hdr[4:]), binary.BigEndian.Uint16(f.hdr[6:])
			f.left = int64(w) * int64(h) * 4
			continue
		}
		if _, err := io.ReadFull(f.R, f.hdr[:1]); err != nil {
			return 0, err
		}
		switch f.hdr[0] {
		case 0: // FramebufferUpdate
			if _, err := io.ReadFull(f.R, f.hdr[:3]); err != nil {
				return 0, err
			}
			f.rects = int(binary.BigEndian.Uint16(f.hdr[1:]))
		case msgServerFence:
			if _, err := io.ReadFull(f.R, f.hdr[:8]); err != nil {
				return 0, err
			}
			f.left = int64(f.hdr[7])
		default:
			return 0, fmt.Errorf("loadtarget: server message type %d", f.hdr[0])
		}
	}
	n, err := f.R.Read(p[:min(int64(len(p)), f.left)])
	f.left -= int64(n)
	return n, err
}
