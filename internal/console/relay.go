package console

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
)

// relayBufferSize is how many bytes the pumps read at a time, into pooled
// buffers. A session holds one only while bytes are moving, never while idle.
const relayBufferSize = 64 << 10

// bigRelayBufferSize is how many bytes pumpToBrowser reads from the VNC
// server at a time for a browser on TLS, whose frames cost per write and
// per read (the socket under TLS gathers a frame's records into one
// write): one read(2) takes whatever the server has sent, up to this, and
// one frame carries it. Over loopback, 256 KiB cut a wss console's system
// calls per MB by 2.4 against 64 KiB; 1 MiB (what the splice relay moves
// per frame) saved little more.
const bigRelayBufferSize = 256 << 10

// recordedRelayBufferSize is the same for a recorded console, each of
// whose reads is also a block of its recording: a copy into its queue, a
// wake of its writer, a few writes to its file. The buffer is held only
// while bytes move, and is small beside what a recording may queue
// (recording.DefaultQueueBytes). On the 2-core test machine, vncbench's
// recorded column went from medians of 733 to 938 MB/s with 256 KiB reads
// against 64 KiB, and from 925 to 1,088 MB/s with 1 MiB reads against
// 256 KiB (9 runs each, alternating).
const recordedRelayBufferSize = 1 << 20

// frameHeaderRoom is the room a relay buffer leaves in front of the bytes
// read from the VNC server, for the WebSocket frame header (at most 10
// bytes for an unmasked frame), so that header and payload go out in one
// write without a copy.
const frameHeaderRoom = 10

var (
	relayBuffers = sync.Pool{New: func() any {
		b := make([]byte, frameHeaderRoom+relayBufferSize)
		return &b
	}}
	bigRelayBuffers = sync.Pool{New: func() any {
		b := make([]byte, frameHeaderRoom+bigRelayBufferSize)
		return &b
	}}
	recordedRelayBuffers = sync.Pool{New: func() any {
		b := make([]byte, frameHeaderRoom+recordedRelayBufferSize)
		return &b
	}}
	// WriteBufferPool is the pool of write buffers for gorilla's
	// upgrader. It keeps gorilla from giving each connection a write
	// buffer of its own: data frames are written by the session, control
	// frames by WriteControl, and neither uses one.
	WriteBufferPool = &sync.Pool{}
)

var errCloseSent = errors.New("close frame already sent")

// CopyRelayOnly turns off what the relay does with a plain TCP socket
// (splicing to the browser, pooled reads from it), so that tests cover the
// path TLS connections take over plain connections too.
var CopyRelayOnly atomic.Bool

// pumpToBrowser relays the VNC server's bytes to the browser, one binary
// message per read. It takes a buffer only once the server's bytes are
// there, so an idle session holds none.
func (s *Session) pumpToBrowser(greeting []byte) {
	defer s.pumpDone()
	defer s.recoverPanic()
	if len(greeting) > 0 {
		buf := make([]byte, frameHeaderRoom+len(greeting))
		copy(buf[frameHeaderRoom:], greeting)
		if err := s.writeData(buf, len(greeting)); err != nil {
			s.end(reasonBrowserGone, 0, "", err)
			return
		}
		s.countToBrowser(len(greeting))
	}
	if s.spice != nil && !s.watchSPICE() {
		return
	}
	if s.serverFilter != nil {
		s.pumpFramedToBrowser()
		return
	}
	if s.rec == nil && s.spliceToBrowser() {
		return
	}
	buffers := s.serverBuffers()
	read := pooledReader(s.target, buffers)
	for {
		bp, n, rerr := read()
		if n > 0 && s.recordServer((*bp)[frameHeaderRoom:frameHeaderRoom+n]) {
			if werr := s.writeData(*bp, n); werr != nil {
				buffers.Put(bp)
				s.end(reasonBrowserGone, 0, "", werr)
				return
			}
			s.countToBrowser(n)
		}
		if bp != nil {
			buffers.Put(bp)
		}
		if errors.Is(rerr, io.EOF) {
			s.end(reasonTargetClosed, websocket.CloseNormalClosure, "VNC server closed the connection", nil)
			return
		}
		if rerr != nil {
			s.end(reasonTargetReadErr, websocket.CloseNormalClosure, "VNC server closed the connection", rerr)
			return
		}
	}
}

// serverBuffers is the pool the VNC server's bytes are read into: the
// bigger buffers for a recorded console (recordedRelayBufferSize) or a
// browser on TLS (bigRelayBufferSize), but only where none is held while
// the server is quiet.
func (s *Session) serverBuffers() *sync.Pool {
	switch {
	case !waitsWithoutBuffer(s.target):
		return &relayBuffers
	case s.rec != nil:
		return &recordedRelayBuffers
	case s.bc.tls != nil:
		return &bigRelayBuffers
	}
	return &relayBuffers
}

// writeData sends buf[frameHeaderRoom:frameHeaderRoom+n] to the browser as
// one binary message: the frame header goes into the room in front of the
// payload, and header and payload go out in one write.
func (s *Session) writeData(buf []byte, n int) error {
	start := s.side.header(buf[:frameHeaderRoom], n)
	s.bc.mu.Lock()
	defer s.bc.mu.Unlock()
	return s.bc.writeLocked(&s.toBrowserBusy, false, func() error {
		return s.bc.writeFrame(buf[start : frameHeaderRoom+n])
	})
}

// putFrameHeader writes the header of an unmasked, final binary frame with
// an n-byte payload at the end of room (frameHeaderRoom bytes) and returns
// where in room it begins (RFC 6455, section 5.2).
func putFrameHeader(room []byte, n int) int {
	const finalBinary = 0x80 | websocket.BinaryMessage
	switch {
	case n <= 125:
		room[8], room[9] = finalBinary, byte(n)
		return 8
	case n <= 0xffff:
		room[6], room[7] = finalBinary, 126
		binary.BigEndian.PutUint16(room[8:], uint16(n))
		return 6
	default:
		room[0], room[1] = finalBinary, 127
		binary.BigEndian.PutUint64(room[2:], uint64(n))
		return 0
	}
}

// heldBufferReader reads c into a buffer from buffers, after its
// frameHeaderRoom, and holds the buffer while it waits: for connections
// whose socket is out of reach.
func heldBufferReader(c net.Conn, buffers *sync.Pool) func() (*[]byte, int, error) {
	return func() (*[]byte, int, error) {
		bp := buffers.Get().(*[]byte)
		n, err := c.Read((*bp)[frameHeaderRoom:])
		return bp, n, err
	}
}

// pumpToTarget relays the client's bytes to the VNC server, after the
// client's RFB handshake for an RFB-aware console.
func (s *Session) pumpToTarget() {
	defer s.pumpDone()
	defer s.recoverPanic()
	if s.login != nil && s.acceptBrowser() != nil {
		return
	}
	if s.spice != nil && len(s.spice.pending) > 0 {
		pending := s.spice.pending
		s.spice.pending = nil
		if s.sendToTarget(pending) != nil {
			return
		}
	}
	s.side.pumpToTarget(s)
}

// copyMessage writes one message from the browser to the VNC server, a
// buffer at a time, so that a message that fits in buf is one write however
// it arrived. It ends the session on error.
func (s *Session) copyMessage(r io.Reader, buf []byte) error {
	for {
		n, rerr := fill(r, buf)
		if n > 0 {
			if werr := s.writeToTarget(buf[:n]); werr != nil {
				return werr
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			s.endOnBrowserError(rerr)
			return rerr
		}
	}
}

// fill reads from r until buf is full or r returns an error, io.EOF at the
// end of the message.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (s *Session) countToBrowser(n int) {
	s.toBrowser.Add(int64(n))
	s.metrics.BytesToBrowser.Add(float64(n))
}

func (s *Session) countToTarget(n int) {
	s.toTarget.Add(int64(n))
	s.metrics.BytesToTarget.Add(float64(n))
}
