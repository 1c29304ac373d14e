package rfbproxy

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbframe"
)

// serverInitHeader is ServerInit's length before the desktop's name.
const serverInitHeader = 24

// MaxServerCarry is the most bytes ServerFilter.Filter may leave unframed
// at the end of what it is given (a header cut by a read): a caller keeps
// them and gives them again, with more after them.
const MaxServerCarry = serverInitHeader

// ServerFilter frames the VNC server's stream from ServerInit on and keeps
// the server's clipboard from the client as the console's Clipboard policy
// says. Every other message passes as it comes; a message the framer
// cannot frame is an error (never a guess). It holds at most one
// Extended Clipboard provide, of at most about the policy's MaxSize, while
// its inflated size is checked; everything else is streamed.
//
// Filter and Held are for one goroutine (the relay of the server's
// stream); SetPixelFormat is for the relay of the client's messages
// (ClientFilter calls it).
type ServerFilter struct {
	policy Clipboard
	// Dropped counts the clipboard messages dropped.
	Dropped atomic.Int64

	initSkip int64 // bytes of ServerInit's name still to pass
	inited   bool

	mu      sync.Mutex
	framer  *rfbframe.Framer
	pending *rfb.PixelFormat // a SetPixelFormat sent before ServerInit came

	verdict verdict // of the message being framed
	hold    []byte  // the message being held
	held    []byte  // a held message to send after what Filter returned
}

// NewServerFilter returns the filter of a console's server stream, which
// begins with ServerInit.
func NewServerFilter(c Clipboard) *ServerFilter {
	return &ServerFilter{policy: c}
}

// SetPixelFormat tells the filter of a client's SetPixelFormat, before it
// is forwarded to the server.
func (f *ServerFilter) SetPixelFormat(pf rfb.PixelFormat) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.framer == nil {
		// The server applies it from its first message after ServerInit.
		f.pending = &pf
		return nil
	}
	return f.framer.SetPixelFormat(pf)
}

// Filter frames p, the next bytes of the server's stream, and moves what
// may reach the client to the front of p, in order: p[:n] goes to the
// client, then Held() when it is not nil. It has framed p[:used]; when
// used is short of len(p) and no message is held, p[used:] is less than
// MaxServerCarry bytes of a header cut short: give them again with more.
// After an error the stream cannot be framed (the console ends).
func (f *ServerFilter) Filter(p []byte) (n, used int, err error) {
	f.held = nil
	for used < len(p) && f.held == nil {
		if !f.inited {
			k, err := f.serverInit(p[used:])
			if err != nil {
				return n, used, err
			}
			if k == 0 {
				return n, used, nil
			}
			n += copy(p[n:], p[used:used+k])
			used += k
			continue
		}
		s, err := f.framer.Next(p[used:])
		if err != nil {
			return n, used, err
		}
		if s.Len == 0 {
			return n, used, nil
		}
		if s.Start {
			f.verdict = f.judge(s)
			if f.verdict == drop {
				f.Dropped.Add(1)
			}
		}
		span := p[used : used+s.Len]
		used += s.Len
		switch f.verdict {
		case pass:
			n += copy(p[n:], span)
		case hold:
			f.hold = append(f.hold, span...)
			if s.End {
				if extendedWithin(s.Clipboard, f.hold[12:], f.policy.Max()) {
					f.held = f.hold
				} else {
					f.Dropped.Add(1)
				}
				f.hold = f.hold[:0]
				if cap(f.hold) > 64<<10 {
					f.hold = nil
				}
			}
		}
	}
	return n, used, nil
}

// Held is the message held whole by the last Filter, to send after what
// Filter returned, or nil. It is valid until the next Filter.
func (f *ServerFilter) Held() []byte { return f.held }

func (f *ServerFilter) judge(s rfbframe.Span) verdict {
	switch s.Kind {
	case rfbframe.ServerCutText:
		return f.policy.judge(true, false, 0, s.Size-8)
	case rfbframe.ExtendedClipboard:
		return f.policy.judge(true, true, s.Clipboard, s.Size-12)
	}
	return pass
}

// serverInit passes ServerInit and starts the framer in its pixel format.
// It returns how many bytes of p it took, 0 when p holds less than the
// header.
func (f *ServerFilter) serverInit(p []byte) (int, error) {
	if f.initSkip > 0 {
		k := int(min(f.initSkip, int64(len(p))))
		f.initSkip -= int64(k)
		f.inited = f.initSkip == 0
		return k, nil
	}
	if len(p) < serverInitHeader {
		return 0, nil
	}
	pf := rfb.UnmarshalPixelFormat(p[4:20])
	fr, err := rfbframe.NewFramer(pf)
	if err != nil {
		return 0, fmt.Errorf("ServerInit: %w", err)
	}
	f.mu.Lock()
	f.framer = fr
	if f.pending != nil {
		err = fr.SetPixelFormat(*f.pending)
		f.pending = nil
	}
	f.mu.Unlock()
	if err != nil {
		return 0, err
	}
	f.initSkip = int64(binary.BigEndian.Uint32(p[20:24]))
	f.inited = f.initSkip == 0
	return serverInitHeader, nil
}
