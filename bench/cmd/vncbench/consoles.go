package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/spice"
)

// dialWSFramed dials an RFB-aware route whose console frames the server's
// stream (a clipboard policy), to a Framed load target: the handshake as
// for dialWSRFB, then the target's ServerInit. The stream reads the
// payloads of the server's messages (loadtarget.FramedReader: the pixels
// of Raw rectangles, ServerFence payloads), after the greeting replayed,
// and, if fenced, sends in ClientFence messages, the only client messages
// with free payload a console that frames the client's messages forwards.
func dialWSFramed(url string, bufSize int, fenced bool) dialFunc {
	dial := dialWS(url, bufSize)
	return func(ctx context.Context) (stream, error) {
		s, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		s.setDeadline(time.Now().Add(30 * time.Second))
		if err := rfbNone(s); err != nil {
			s.Close()
			return nil, fmt.Errorf("RFB handshake with the proxy: %w", err)
		}
		var si rfb.ServerInit
		if err := si.Read(s); err != nil {
			s.Close()
			return nil, err
		}
		if si.PixelFormat != rfb.PixelFormat32 {
			s.Close()
			return nil, fmt.Errorf("ServerInit with pixel format %+v", si.PixelFormat)
		}
		return &framedStream{rfbStream{stream: s, greeting: []byte(loadtarget.Greeting), fenced: fenced}, loadtarget.FramedReader{R: s}}, nil
	}
}

// framedStream reads the payloads of a Framed target's messages.
type framedStream struct {
	rfbStream
	r loadtarget.FramedReader
}

func (s *framedStream) Read(p []byte) (int, error) {
	if len(s.greeting) > 0 {
		return s.rfbStream.Read(p)
	}
	return s.r.Read(p)
}

// spiceChannels is how many channels a SPICE console opens here: main,
// display, inputs and cursor, as spice-html5 does for a machine without
// sound.
const spiceChannels = 4

// dialSPICE opens a SPICE console on a protocol spice route as
// spice-html5 does: a WebSocket and a link for the main channel, whose
// MAIN_INIT carries the session id, then one for each of display, inputs
// and cursor with that id (and DISPLAY_INIT on the display channel). The
// stream is the main channel, after the link: each send is one message
// (mini header), each read returns message bodies, which the stand-in
// echoes; the greeting is replayed first, and the first command, 'e', is
// dropped (the stand-in echoes anyway). Close ends every channel.
func dialSPICE(url string, bufSize int) dialFunc {
	dial := dialWS(url, bufSize)
	return func(ctx context.Context) (stream, error) {
		c := &spiceStream{greeting: []byte(loadtarget.Greeting)}
		link := func(typ spice.ChannelType, id uint32) (*spice.Channel, error) {
			s, err := dial(ctx)
			if err != nil {
				return nil, fmt.Errorf("%s channel: %w", typ, err)
			}
			c.chans = append(c.chans, s)
			s.setDeadline(time.Now().Add(30 * time.Second))
			ch, err := spice.LinkChannel(s.(wsStream).Stream, typ, id, "", false)
			if err != nil {
				return nil, fmt.Errorf("%s channel: %w", typ, err)
			}
			return ch, nil
		}
		main, err := link(spice.ChannelMain, 0)
		if err == nil {
			c.main = main
			for _, typ := range []spice.ChannelType{spice.ChannelDisplay, spice.ChannelInputs, spice.ChannelCursor} {
				if _, err = link(typ, main.SessionID); err != nil {
					break
				}
			}
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// spiceStream is a SPICE console as a stream over its main channel.
type spiceStream struct {
	chans    []stream // main first
	main     *spice.Channel
	greeting []byte
	started  bool   // the first send (the command) has gone
	body     []byte // the rest of the message being read
}

// spiceEchoMsg is the type of the messages sent: the stand-in echoes any.
const spiceEchoMsg = spice.MsgcPong

func (s *spiceStream) send(p []byte) error {
	if !s.started {
		s.started = true
		if len(p) == 1 && p[0] == 'e' {
			return nil
		}
		return errors.New("a SPICE console takes the echo command only")
	}
	return s.main.WriteMessage(spiceEchoMsg, p)
}

func (s *spiceStream) Read(p []byte) (int, error) {
	if len(s.greeting) > 0 {
		n := copy(p, s.greeting)
		s.greeting = s.greeting[n:]
		return n, nil
	}
	for len(s.body) == 0 {
		typ, body, err := s.main.ReadMessage()
		if err != nil {
			return 0, err
		}
		if typ != spiceEchoMsg {
			return 0, fmt.Errorf("a main channel message of type %d", typ)
		}
		s.body = body
	}
	n := copy(p, s.body)
	s.body = s.body[n:]
	return n, nil
}

func (s *spiceStream) setDeadline(t time.Time) {
	for _, c := range s.chans {
		c.setDeadline(t)
	}
}

func (s *spiceStream) Close() error {
	var errs []error
	for _, c := range s.chans {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
