//go:build linux

package console

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

// spliceMax is the most the splice relay moves per message: what a pipe
// holds by default.
const spliceMax = 1 << 20

// A splicePipe carries the VNC server's bytes from its socket to the
// browser's inside the kernel. Pipes are taken only while bytes are moving,
// so an idle session holds none.
type splicePipe struct {
	r, w int
}

// idlePipes holds empty pipes for the next messages; more than it holds
// are closed, so that pipes live only while bytes move, give or take a few.
var idlePipes = make(chan *splicePipe, 16)

// getPipe returns an empty pipe, or nil if none can be made (out of file
// descriptors, say).
func getPipe() *splicePipe {
	select {
	case p := <-idlePipes:
		return p
	default:
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil
	}
	// Best effort: an unprivileged process may be refused a bigger pipe.
	_, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, spliceMax)
	return &splicePipe{r: fds[0], w: fds[1]}
}

// putPipe keeps an empty pipe for the next message; a pipe that may hold
// bytes, or one more than idlePipes holds, is closed at once.
func putPipe(p *splicePipe, empty bool) {
	if empty {
		select {
		case idlePipes <- p:
			return
		default:
		}
	}
	unix.Close(p.r)
	unix.Close(p.w)
}

// spliceToBrowser relays the VNC server's bytes to the browser the way
// pumpToBrowser does, one binary message per read, but moves them with
// splice(2) from one socket through a pipe into the other, so that they are
// never copied through the process: each message is the frame header, sent
// with MSG_MORE, and the payload spliced after it, in one hold of the
// browser socket's write lock, so no control frame comes between them.
//
// It returns false, with nothing read and not yet relayed, when the
// browser's connection is not a plain TCP socket (TLS, or a listener
// wrapper's connection) or the VNC server's is not a socket, or once no
// pipe can be made (out of file descriptors); the copying relay then
// carries on. Otherwise it runs until the session ends.
func (s *Session) spliceToBrowser() bool {
	if CopyRelayOnly.Load() {
		return false
	}
	bc, ok := s.browser.(*net.TCPConn)
	if !ok {
		return false
	}
	tc, ok := s.target.(syscall.Conn)
	if !ok {
		return false
	}
	brc, err := bc.SyscallConn()
	if err != nil {
		return false
	}
	trc, err := tc.SyscallConn()
	if err != nil {
		return false
	}

	var (
		p    *splicePipe
		n    int
		rerr error
	)
	readReady := func(fd uintptr) bool {
		if p = getPipe(); p == nil {
			return true // no pipe to be had: the copying relay takes over
		}
		n, rerr = ignoringEINTR(func() (int, error) {
			k, err := unix.Splice(int(fd), nil, p.w, nil, spliceMax, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
			return int(k), err
		})
		if rerr == unix.EAGAIN {
			putPipe(p, true)
			p = nil
			return false
		}
		return true
	}

	for {
		p, n, rerr = nil, 0, nil
		if err := trc.Read(readReady); err != nil {
			rerr = err
		} else if p == nil {
			return false
		} else if rerr != nil {
			rerr = os.NewSyscallError("splice", rerr)
		} else if n == 0 {
			rerr = io.EOF
		}
		if n > 0 {
			werr := s.spliceFrame(brc, p, n)
			putPipe(p, werr == nil)
			if werr != nil {
				s.end(reasonBrowserGone, 0, "", werr)
				return true
			}
			s.countToBrowser(n)
		} else if p != nil {
			putPipe(p, true)
		}
		if errors.Is(rerr, io.EOF) {
			s.end(reasonTargetClosed, websocket.CloseNormalClosure, "VNC server closed the connection", nil)
			return true
		}
		if rerr != nil {
			s.end(reasonTargetReadErr, websocket.CloseNormalClosure, "VNC server closed the connection", rerr)
			return true
		}
	}
}

// spliceFrame sends the n bytes in p to the browser as one binary message.
func (s *Session) spliceFrame(brc syscall.RawConn, p *splicePipe, n int) error {
	var room [frameHeaderRoom]byte
	header := room[s.side.header(room[:], n):]
	left := n
	var werr error
	writeReady := func(fd uintptr) bool {
		for len(header) > 0 {
			k, err := ignoringEINTR(func() (int, error) {
				return unix.SendmsgN(int(fd), header, nil, nil, unix.MSG_MORE|unix.MSG_NOSIGNAL)
			})
			if err == unix.EAGAIN {
				return false
			}
			if err != nil {
				werr = os.NewSyscallError("sendmsg", err)
				return true
			}
			header = header[k:]
		}
		for left > 0 {
			k, err := ignoringEINTR(func() (int, error) {
				k, err := unix.Splice(p.r, nil, int(fd), nil, left, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
				return int(k), err
			})
			if err == unix.EAGAIN {
				return false
			}
			if err == nil && k == 0 {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				werr = os.NewSyscallError("splice", err)
				return true
			}
			left -= k
		}
		return true
	}
	s.bc.mu.Lock()
	defer s.bc.mu.Unlock()
	return s.bc.writeLocked(&s.toBrowserBusy, false, func() error {
		if err := brc.Write(writeReady); err != nil {
			return err
		}
		return werr
	})
}

func ignoringEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}
