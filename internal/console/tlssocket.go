package console

import (
	"crypto/tls"
	"net"
	"reflect"
	"sync"
	"unsafe"
)

// tlsSocket is the socket under a browser's TLS connection, as crypto/tls
// reads and writes it.
//
// crypto/tls writes each record, at most 16 KiB of payload, with a write(2)
// of its own, so a 64 KiB data frame cost four writes, each a trip through
// the kernel's TCP stack to the browser: most of a wss console's CPU. While
// the session writes a data frame, a tlsSocket gathers the frame's
// records instead and sends them with one write when the frame is done
// (gather, send). Everything else (handshake, control frames, alerts) goes
// straight to the socket.
//
// Reads go through a pooledReadConn on a plain TCP socket: crypto/tls reads
// a record's header, then its body, each read(2) filling what it has room
// for (16 to 32 KiB); one read(2) of up to bigRelayBufferSize serves
// several records. Over loopback that cost a tenth less CPU per byte from
// the browser than no pooled reads, and a little less than 64 KiB reads,
// for the extra copy it makes.
//
// Buffers are pooled and held only while bytes move: an idle console holds
// none.
type tlsSocket struct {
	net.Conn          // the socket
	reads    net.Conn // what Read reads: a pooledReadConn over the socket

	// mu guards the fields below: a Close from another goroutine
	// (crypto/tls then writes its close_notify alert) may come while a
	// frame is being gathered or sent.
	mu sync.Mutex
	// out holds the records gathered for the frame being written; nil
	// outside a frame.
	out *[]byte
	// err is the error of a gathered frame's write: the records were cut
	// short, so nothing may follow them, as crypto/tls ensures for its own
	// writes.
	err error
}

// gatherSize is what a tlsSocket's buffer holds: a frame from a full relay
// buffer (bigRelayBufferSize), in records of at most 16 KiB with a few
// dozen bytes of header, nonce, tag and padding each. A bigger frame (a
// recorded console's, recordedRelayBufferSize) goes in several writes.
const gatherSize = frameHeaderRoom + bigRelayBufferSize + 8<<10

var gatherBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, gatherSize)
	return &b
}}

func (s *tlsSocket) Read(p []byte) (int, error) { return s.reads.Read(p) }

// Write gathers p while a frame is written, and writes it to the socket
// otherwise.
func (s *tlsSocket) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	if s.out == nil {
		return s.Conn.Write(p)
	}
	if len(*s.out)+len(p) > cap(*s.out) {
		// More than a frame from one relay buffer: what is gathered goes
		// now, and p with what follows.
		if err := s.writeOut(); err != nil {
			return 0, err
		}
		if len(p) > cap(*s.out) {
			return s.Conn.Write(p)
		}
	}
	*s.out = append(*s.out, p...)
	return len(p), nil
}

// gather begins a frame: the records written until send are gathered.
func (s *tlsSocket) gather() {
	s.mu.Lock()
	s.out = gatherBuffers.Get().(*[]byte)
	s.mu.Unlock()
}

// send ends a frame: the records gathered since gather go to the socket in
// one write.
func (s *tlsSocket) send() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.err
	if err == nil {
		err = s.writeOut()
	}
	*s.out = (*s.out)[:0]
	gatherBuffers.Put(s.out)
	s.out = nil
	return err
}

// writeOut writes the gathered records to the socket; s.mu is held. A
// write cut short (a deadline, a browser gone) fails every later one.
func (s *tlsSocket) writeOut() error {
	if len(*s.out) == 0 {
		return nil
	}
	_, err := s.Conn.Write(*s.out)
	*s.out = (*s.out)[:0]
	if err != nil {
		s.err = err
	}
	return err
}

// underTLS puts a tlsSocket under tc, in place of its socket, and returns
// it, or nil where it cannot. tc must be in no other goroutine's hands:
// it is, for a connection just hijacked from the HTTP server.
//
// crypto/tls offers no way to give a Conn another socket once it is made,
// and Caddy makes it. The socket is the Conn's field conn, the one NetConn
// returns: the field is found by its name and type, and its value checked
// against NetConn before and after, so that a crypto/tls that keeps its
// socket otherwise leaves tc as it is rather than broken (and TestUnderTLS
// fails).
func underTLS(tc *tls.Conn) *tlsSocket {
	offset, ok := tlsConnSocketField()
	if !ok {
		return nil
	}
	field := (*net.Conn)(unsafe.Add(unsafe.Pointer(tc), offset))
	if *field == nil || !reflect.TypeOf(*field).Comparable() || *field != tc.NetConn() {
		return nil
	}
	s := &tlsSocket{Conn: *field, reads: pooledReads(*field, &bigRelayBuffers)}
	*field = s
	if tc.NetConn() != net.Conn(s) {
		*field = s.Conn
		return nil
	}
	return s
}

// tlsConnSocketField is the offset of crypto/tls.Conn's socket field.
var tlsConnSocketField = sync.OnceValues(func() (uintptr, bool) {
	f, ok := reflect.TypeFor[tls.Conn]().FieldByName("conn")
	if !ok || f.Type != reflect.TypeFor[net.Conn]() {
		return 0, false
	}
	return f.Offset, true
})
