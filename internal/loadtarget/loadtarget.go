// Package loadtarget is a TCP server that greets like a VNC server and then
// moves bytes on command, for relay tests and benchmarks.
//
// After the greeting "RFB 003.008\n" the client sends a one-byte command:
//
//	'e'          echo: everything read is written back until EOF
//	's' + n      send: n bytes (8-byte big-endian) of Stream(0..n) to the client
//	'v' + n      verify: read n bytes, which must be Stream(0..n), then answer
//	             with how many of them matched before the first that did not
//	             (8-byte big-endian; n when all did). It costs a copy and a
//	             compare per byte, so that throughput measurements measure the
//	             connection rather than the check.
//	'i'          idle: read and discard until the client closes
//
// The connection closes after 's' and 'v' complete.
//
// A client that answers the greeting with an RFB version (as the proxy's
// RFB-aware mode does) logs in first: security type VNC authentication when
// the Server has a Password, None otherwise, then ClientInit. If its first
// byte after that is a ClientFence message type (248), everything it sends
// is taken as ClientFence messages whose payloads, joined, carry the
// commands and their bytes: the only client messages with free payload that
// a view-only console forwards.
//
// A Server with Framed set speaks, after such a login, as a VNC server
// does, for a proxy that frames the server's stream (a console with a
// clipboard policy, or one whose recording is cut at message boundaries):
// it sends a ServerInit (see FramedWidth, FramedHeight and
// rfb.PixelFormat32) before reading the command, 's' sends the stream as
// the pixels of FramebufferUpdate messages of one Raw rectangle each (see
// FramedReader), and what 'e' echoes and 'v' answers goes out in
// ServerFence messages. A client that does not log in sees no difference.
package loadtarget

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// Greeting is what the target sends first.
const Greeting = "RFB 003.008\n"

// streamPeriod is the period of Stream: its byte at x depends on x's low
// 21 bits only, so the stream is a table that repeats, copied at memory
// speed rather than computed a byte at a time.
const streamPeriod = 1 << 21

var streamTable = sync.OnceValue(func() []byte {
	t := make([]byte, streamPeriod)
	for x := range t {
		t[x] = byte(uint64(x)*2654435761>>13) ^ byte(x>>8)
	}
	return t
})

// Stream fills p with the deterministic byte stream that 's' sends, starting
// at offset off of the stream. Clients check what they receive with it.
func Stream(p []byte, off int64) {
	t := streamTable()
	for len(p) > 0 {
		n := copy(p, t[off%streamPeriod:])
		p = p[n:]
		off += int64(n)
	}
}

// Server serves the commands on every accepted connection.
type Server struct {
	// Password makes RFB clients log in with VNC authentication.
	Password string
	// Framed: after an RFB client's login, speak as a VNC server (see the
	// package doc).
	Framed bool

	wg    sync.WaitGroup
	mu    sync.Mutex
	l     net.Listener
	conns map[net.Conn]struct{}
}

// Serve accepts connections on l until Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	s.l = l
	if s.conns == nil {
		s.conns = make(map[net.Conn]struct{})
	}
	s.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			_ = s.handle(c)
		}()
	}
}

// Close stops accepting, closes every connection and waits for their
// goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.l != nil {
		s.l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Conns returns how many connections are open.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) handle(c net.Conn) error {
	if _, err := io.WriteString(c, Greeting); err != nil {
		return err
	}
	r := bufio.NewReaderSize(c, 64<<10)
	cmd, err := r.ReadByte()
	if err != nil {
		return err
	}
	if cmd == 'R' {
		if err := s.login(c, r); err != nil {
			return err
		}
		if s.Framed {
			return s.handleFramed(c, r)
		}
		if next, err := r.Peek(1); err == nil && next[0] == msgClientFence {
			r = bufio.NewReaderSize(&fenceReader{r: r}, 64<<10)
		}
		if cmd, err = r.ReadByte(); err != nil {
			return err
		}
	}
	switch cmd {
	case 'e':
		_, err = r.WriteTo(c)
		return err
	case 'i':
		_, err = io.Copy(io.Discard, r)
		return err
	case 's', 'v':
		var hdr [8]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		n := int64(binary.BigEndian.Uint64(hdr[:]))
		if cmd == 's' {
			return send(c, n)
		}
		_, err := c.Write(binary.BigEndian.AppendUint64(nil, uint64(verify(r, n))))
		return err
	default:
		return errors.New("loadtarget: unknown command")
	}
}

// login runs the server side of an RFB 3.8 handshake whose client version
// has begun ('R' read already), up to and including ClientInit.
func (s *Server) login(c net.Conn, r *bufio.Reader) error {
	if _, err := r.Discard(len(Greeting) - 1); err != nil {
		return err
	}
	security := byte(1) // None
	if s.Password != "" {
		security = 2 // VNC authentication
	}
	if _, err := c.Write([]byte{1, security}); err != nil {
		return err
	}
	if choice, err := r.ReadByte(); err != nil || choice != security {
		return errors.New("loadtarget: the client chose another security type")
	}
	if s.Password != "" {
		var challenge, resp [16]byte
		_, _ = rand.Read(challenge[:])
		if _, err := c.Write(challenge[:]); err != nil {
			return err
		}
		if _, err := io.ReadFull(r, resp[:]); err != nil {
			return err
		}
		if resp != rfb.VNCAuthResponse(s.Password, challenge) {
			_, _ = c.Write([]byte{0, 0, 0, 1, 0, 0, 0, 0})
			return errors.New("loadtarget: wrong password")
		}
	}
	if _, err := c.Write([]byte{0, 0, 0, 0}); err != nil {
		return err
	}
	_, err := r.ReadByte() // ClientInit
	return err
}

// msgClientFence is the RFB message type of ClientFence.
const msgClientFence = 248

// fenceReader reads the payloads of consecutive ClientFence messages:
// type, 3 bytes of padding, 4 of flags, a length byte, the payload.
type fenceReader struct {
	r    *bufio.Reader
	left int // payload bytes of the current message still to read
}

func (f *fenceReader) Read(p []byte) (int, error) {
	for f.left == 0 {
		var hdr [9]byte
		if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
			return 0, err
		}
		if hdr[0] != msgClientFence {
			return 0, errors.New("loadtarget: a message other than ClientFence")
		}
		f.left = int(hdr[8])
	}
	n, err := f.r.Read(p[:min(len(p), f.left)])
	f.left -= n
	return n, err
}

// AppendFences appends p as ClientFence messages, 64 payload bytes at most
// each, the form a fenced client (see the package doc) sends.
func AppendFences(dst, p []byte) []byte { return appendFences(dst, p, msgClientFence) }

// appendFences appends p as fence messages of type typ (ClientFence and
// ServerFence are laid out alike), 64 payload bytes at most each.
func appendFences(dst, p []byte, typ byte) []byte {
	for len(p) > 0 {
		n := min(len(p), 64)
		dst = append(dst, typ, 0, 0, 0, 0, 0, 0, 0, byte(n))
		dst = append(dst, p[:n]...)
		p = p[n:]
	}
	return dst
}

// verify reads n bytes from r and returns how many leading ones equal
// Stream(0..n); it returns early only if r fails.
func verify(r io.Reader, n int64) int64 {
	got := make([]byte, 64<<10)
	want := make([]byte, 64<<10)
	matched := int64(-1)
	for off := int64(0); off < n; {
		k, err := r.Read(got[:min(int64(len(got)), n-off)])
		if matched < 0 && k > 0 {
			Stream(want[:k], off)
			if i := mismatch(got[:k], want[:k]); i >= 0 {
				matched = off + int64(i)
			}
		}
		off += int64(k)
		if err != nil {
			if matched < 0 {
				matched = off
			}
			return matched
		}
	}
	if matched < 0 {
		matched = n
	}
	return matched
}

// mismatch returns the index of the first byte where a and b differ, or -1.
func mismatch(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func send(w io.Writer, n int64) error {
	buf := make([]byte, 64<<10)
	for off := int64(0); off < n; {
		chunk := buf
		if rest := n - off; rest < int64(len(chunk)) {
			chunk = chunk[:rest]
		}
		Stream(chunk, off)
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		off += int64(len(chunk))
	}
	return nil
}
