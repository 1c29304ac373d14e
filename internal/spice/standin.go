package spice

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// StandIn is a SPICE server for benchmarks and relay tests, where QEMU
// cannot serve (it takes one client session at a time): it links every
// channel as spice-server does (a reply with an RSA key and the mini
// header, any ticket accepted), sends a main channel MAIN_INIT with a new
// session id, answers a display channel's DISPLAY_INIT with one message
// (so that the channel has started), and from then on echoes what it
// reads on every channel, for round trips through a proxy. It checks
// nothing else: it is a load target, not a SPICE server.
type StandIn struct {
	key     []byte // the DER public key of the reply
	session atomic.Uint32
	mu      sync.Mutex
	ln      net.Listener
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

// NewStandIn makes a StandIn with a fresh RSA key.
func NewStandIn() (*StandIn, error) {
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, err
	}
	if len(der) != pubKeySize {
		return nil, fmt.Errorf("a public key of %d bytes, want %d", len(der), pubKeySize)
	}
	s := &StandIn{key: der, conns: make(map[net.Conn]struct{})}
	s.session.Store(0x5ce0000)
	return s, nil
}

// Serve accepts connections on l until Close.
func (s *StandIn) Serve(l net.Listener) error {
	s.mu.Lock()
	s.ln = l
	s.mu.Unlock()
	for {
		c, err := l.Accept()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			// Out of descriptors for a moment: the channels that hold
			// them will close.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			_ = s.handle(c)
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		})
	}
}

// Conns is how many channels are connected.
func (s *StandIn) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close stops Serve and closes every channel.
func (s *StandIn) Close() error {
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *StandIn) handle(c net.Conn) error {
	r := bufio.NewReaderSize(c, 512)
	var lp LinkParser
	var hdr [LinkHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	if _, _, err := lp.Feed(hdr[:]); err != nil {
		return err
	}
	mess := make([]byte, binary.LittleEndian.Uint32(hdr[12:]))
	if _, err := io.ReadFull(r, mess); err != nil {
		return err
	}
	if _, done, err := lp.Feed(mess); err != nil || !done {
		return errors.Join(errors.New("a link message that does not end"), err)
	}
	link := lp.Link()
	if !link.MiniHeader {
		return errors.New("the stand-in speaks the mini header only")
	}
	if _, err := c.Write(s.reply()); err != nil {
		return err
	}
	ticket := TicketSize
	if link.AuthSelection {
		ticket += 4
	}
	if _, err := r.Discard(ticket); err != nil {
		return err
	}
	out := binary.LittleEndian.AppendUint32(nil, LinkOK)
	switch link.Channel {
	case ChannelMain:
		body := binary.LittleEndian.AppendUint32(nil, s.session.Add(1))
		body = append(body, make([]byte, mainInitSize-4)...)
		out = appendMini(out, MsgMainInit, body)
	case ChannelDisplay:
		if _, err := c.Write(out); err != nil {
			return err
		}
		// DISPLAY_INIT, then the channel starts.
		var h [MiniHeaderSize]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return err
		}
		if _, err := r.Discard(int(binary.LittleEndian.Uint32(h[2:]))); err != nil {
			return err
		}
		out = appendMini(nil, MsgDisplayMark, nil)
	}
	if _, err := c.Write(out); err != nil {
		return err
	}
	// Echo through a small buffer of its own: io.Copy between two TCP
	// sockets splices through a pipe, two more descriptors per channel,
	// which thousands of idle channels cannot afford.
	buf := make([]byte, 4<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}

// reply is the link reply: a header, SpiceLinkReply with the key and one
// common capability word (auth selection, SPICE tickets, mini header).
func (s *StandIn) reply() []byte {
	const capsOffset = linkReplyFixed
	body := binary.LittleEndian.AppendUint32(nil, LinkOK)
	body = append(body, s.key...)
	body = binary.LittleEndian.AppendUint32(body, 1) // num_common_caps
	body = binary.LittleEndian.AppendUint32(body, 0) // num_channel_caps
	body = binary.LittleEndian.AppendUint32(body, capsOffset)
	body = binary.LittleEndian.AppendUint32(body, 1<<CapProtocolAuthSelection|1<<CapAuthSpice|1<<CapMiniHeader)
	out := append([]byte(Magic), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(out[4:], VersionMajor)
	binary.LittleEndian.PutUint32(out[8:], VersionMinor)
	binary.LittleEndian.PutUint32(out[12:], uint32(len(body)))
	return append(out, body...)
}

func appendMini(dst []byte, typ uint16, body []byte) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, typ)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...)
}
