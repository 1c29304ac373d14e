package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/internal/spice"
)

// Why a SPICE channel is refused or ends, as logged and as close 1008's
// text.
const (
	reasonNotSPICEClient = "not a SPICE client"
	reasonNotSPICEServer = "not a SPICE server"
	// ReasonUnknownSPICESession: a channel whose connection_id is no live
	// session of its token.
	ReasonUnknownSPICESession = "unknown SPICE session"
)

// A SPICE console is the channels of one SPICE session: spice-html5 opens
// a WebSocket per channel, main first, and the later ones carry the
// session id the server sent in the main channel's MAIN_INIT. Each channel
// is a Session of its own (its pumps, stall checks, close handshake), and
// the SPICEConsole makes them one console: one entry in the admin list
// (the main channel's, with the channel count and the bytes of all), one
// "session started" and one "session ended" line, one place in the limits
// (released when the last channel is gone), one end (the main channel's
// end, by the browser, an admin, expiry or shutdown, ends every channel).
//
// Each channel's browser stream goes through a spice.ClientStream, and the
// server's through a spice.ServerStream until it is known to be SPICE (and,
// on the main channel, until MAIN_INIT gave the session id). A display
// channel's server side is closed as spice.CloseServer says while the
// server has not started it: QEMU 7.2 crashes otherwise.
type SPICEConsole struct {
	tokenHash string
	redial    func(context.Context) (net.Conn, error)
	main      *Session

	mu       sync.Mutex
	id       uint32 // the session id from MAIN_INIT; 0 before
	channels map[*Session]struct{}
	opened   int  // channels ever admitted, the main one included
	ending   bool // the main channel has ended: no channel joins
	reason   string
	code     int
	text     string
	endErr   error
	// the bytes of the channels that have finished
	goneToBrowser, goneToTarget int64
}

// spiceKey is how a later channel names its console: the token it came
// with and the session id in its link. Session ids are the SPICE
// server's, so two VMs may give the same one; a token names one VM.
type spiceKey struct {
	tokenHash string
	id        uint32
}

// spiceConsoles are the live SPICE consoles of the process that have their
// session id.
var spiceConsoles = struct {
	mu      sync.Mutex
	byKey   map[spiceKey]*SPICEConsole
	byToken map[string]map[*SPICEConsole]struct{}
}{byKey: make(map[spiceKey]*SPICEConsole), byToken: make(map[string]map[*SPICEConsole]struct{})}

// SPICEConsoleOfToken returns a live SPICE console whose main channel this
// token (by its hash) opened and whose session id is known, or nil: a new
// channel with this token is likely one of its later channels.
func SPICEConsoleOfToken(tokenHash string) *SPICEConsole {
	spiceConsoles.mu.Lock()
	defer spiceConsoles.mu.Unlock()
	var newest *SPICEConsole
	for c := range spiceConsoles.byToken[tokenHash] {
		if newest == nil || c.main.started.After(newest.main.started) {
			newest = c
		}
	}
	return newest
}

// FindSPICEConsole returns the live SPICE console with this session id
// whose main channel was opened with this token (by its hash); nil
// otherwise, whether the id is unknown or another token's.
func FindSPICEConsole(id uint32, tokenHash string) *SPICEConsole {
	spiceConsoles.mu.Lock()
	defer spiceConsoles.mu.Unlock()
	return spiceConsoles.byKey[spiceKey{tokenHash, id}]
}

// Target is the console's target, network:address.
func (c *SPICEConsole) Target() string { return c.main.targetAddr }

// Redial connects to the console's target again, for a new channel.
func (c *SPICEConsole) Redial(ctx context.Context) (net.Conn, error) { return c.redial(ctx) }

// register makes the console findable by its session id, once MAIN_INIT
// gave it.
func (c *SPICEConsole) register(id uint32) {
	c.mu.Lock()
	if c.ending || c.id != 0 {
		c.mu.Unlock()
		return
	}
	c.id = id
	c.mu.Unlock()
	spiceConsoles.mu.Lock()
	defer spiceConsoles.mu.Unlock()
	key := spiceKey{c.tokenHash, id}
	if old := spiceConsoles.byKey[key]; old != nil {
		// The server gave a live console's id again: it ended that
		// session (spice-server takes one client), so this one is it.
		delete(spiceConsoles.byToken[c.tokenHash], old)
	}
	spiceConsoles.byKey[key] = c
	if spiceConsoles.byToken[c.tokenHash] == nil {
		spiceConsoles.byToken[c.tokenHash] = make(map[*SPICEConsole]struct{})
	}
	spiceConsoles.byToken[c.tokenHash][c] = struct{}{}
}

func (c *SPICEConsole) unregister() {
	c.mu.Lock()
	id := c.id
	c.mu.Unlock()
	if id == 0 {
		return
	}
	spiceConsoles.mu.Lock()
	defer spiceConsoles.mu.Unlock()
	key := spiceKey{c.tokenHash, id}
	if spiceConsoles.byKey[key] == c {
		delete(spiceConsoles.byKey, key)
	}
	if byToken := spiceConsoles.byToken[c.tokenHash]; byToken != nil {
		delete(byToken, c)
		if len(byToken) == 0 {
			delete(spiceConsoles.byToken, c.tokenHash)
		}
	}
}

var errSPICEConsoleEnded = errors.New("the SPICE console has ended")

// add takes a channel in; it fails once the main channel has ended.
func (c *SPICEConsole) add(s *Session) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ending {
		return errSPICEConsoleEnded
	}
	if c.channels == nil {
		c.channels = make(map[*Session]struct{})
	}
	c.channels[s] = struct{}{}
	c.opened++
	return nil
}

// mainEnded ends every other channel with the main channel's close code
// and text; no channel joins from now on. It runs before the main
// channel's server side closes, which makes the SPICE server close the
// others: their ends, however they come, are the console's.
func (c *SPICEConsole) mainEnded(reason string, code int, text string, err error) {
	c.mu.Lock()
	c.ending, c.reason, c.code, c.text, c.endErr = true, reason, code, text, err
	others := make([]*Session, 0, len(c.channels))
	for s := range c.channels {
		if s != c.main {
			others = append(others, s)
		}
	}
	c.mu.Unlock()
	c.unregister()
	for _, s := range others {
		// Each waits for its own browser, as any end does; the main
		// channel goes on with its own.
		go s.end(reason, code, text, nil)
	}
}

// endedAs is how the console ended, once its main channel has.
func (c *SPICEConsole) endedAs() (reason string, code int, text string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason, c.code, c.text, c.ending
}

// remove lets go of a finished channel and reports whether it was the
// last: then the console has ended.
func (c *SPICEConsole) remove(s *Session) (last bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.channels, s)
	c.goneToBrowser += s.toBrowser.Load()
	c.goneToTarget += s.toTarget.Load()
	return len(c.channels) == 0 && c.ending
}

// totals are the console's bytes each way and its live channels.
func (c *SPICEConsole) totals() (toBrowser, toTarget int64, live int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	toBrowser, toTarget = c.goneToBrowser, c.goneToTarget
	for s := range c.channels {
		toBrowser += s.toBrowser.Load()
		toTarget += s.toTarget.Load()
	}
	return toBrowser, toTarget, len(c.channels)
}

// spiceChannel is a session's part as one channel of a SPICE console.
type spiceChannel struct {
	console *SPICEConsole
	main    bool
	client  *spice.ClientStream
	server  spice.ServerStream
	// pending is what the client's link read passed, for the server first.
	pending []byte
	// safe: closing the server's side needs no care (not a display
	// channel, or one the server has started or refused).
	safe atomic.Bool
}

// SPICELink is a SPICE channel's link message, read from the browser by
// ReadSPICELink before the door decides which console the channel is for.
type SPICELink struct {
	client  *spice.ClientStream
	pending []byte
}

// Link is what the link message says.
func (l *SPICELink) Link() spice.Link {
	link, _ := l.client.Link()
	return link
}

// ErrNotSPICE wraps why a browser's first bytes are no SPICE link.
var ErrNotSPICE = errors.New(reasonNotSPICEClient)

// ReadSPICELink reads a SPICE channel's link message from the browser's
// first binary messages, within timeout: a SpiceLinkHeader ("REDQ", major
// 2) and a SpiceLinkMess, as strictly as spice-server reads them. Nothing
// of it has gone to the server yet. An error wraps ErrNotSPICE for bytes
// that are not a link or no whole link in time (a header that announces
// more than comes, a browser that sends nothing), or is the WebSocket's.
func ReadSPICELink(ws *websocket.Conn, timeout time.Duration) (*SPICELink, error) {
	c := ws.NetConn()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	l := &SPICELink{client: new(spice.ClientStream)}
	// A link message is at most LinkHeaderSize+MaxLinkSize bytes; what a
	// message carries past it (spice-html5 sends the link alone) is
	// bounded as much, and anything larger is no SPICE client's.
	var buf [spice.LinkHeaderSize + spice.MaxLinkSize]byte
	for {
		mt, r, err := ws.NextReader()
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("%w: no whole link message within %v", ErrNotSPICE, timeout)
		}
		if err != nil {
			return nil, err
		}
		if mt != websocket.BinaryMessage {
			return nil, fmt.Errorf("%w: a text message", ErrNotSPICE)
		}
		n, err := io.ReadFull(r, buf[:])
		switch {
		case err == nil:
			if k, _ := r.Read(make([]byte, 1)); k > 0 {
				return nil, fmt.Errorf("%w: a first message of more than %d bytes", ErrNotSPICE, len(buf))
			}
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		default:
			return nil, err
		}
		l.pending, err = l.client.Filter(l.pending, buf[:n])
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotSPICE, err)
		}
		if _, done := l.client.Link(); done {
			return l, nil
		}
	}
}

// SPICEChannel says which console a SPICE channel's session is for.
type SPICEChannel struct {
	// Link is the channel's link message, read by ReadSPICELink.
	Link *SPICELink
	// Join is the live console a later channel joins (its connection_id
	// is the console's session id); nil for a main channel, whose session
	// starts a console.
	Join *SPICEConsole
	// Redial connects to the target again, for the console's later
	// channels (a main channel's; admission.Console.Redialer).
	Redial func(context.Context) (net.Conn, error)
}

// NewSPICE makes the session of one SPICE channel: a browser's WebSocket
// whose link message was read (ch.Link) and the SPICE server's connection,
// which has been sent nothing yet. A main channel starts a console (its
// Config's limits, expiry and Release are the console's); a later channel
// joins ch.Join, and its Config's EndAt, IdleTimeout and Release are
// ignored (the console's main channel has them). Start fails for a
// channel whose console has ended.
func NewSPICE(ws *websocket.Conn, target net.Conn, c Config, ch SPICEChannel) *Session {
	main := ch.Join == nil
	if !main {
		c.EndAt, c.IdleTimeout, c.Release = time.Time{}, 0, nil
	}
	s := New(ws, target, c)
	link := ch.Link.Link()
	sc := &spiceChannel{
		console: ch.Join,
		main:    main,
		client:  ch.Link.client,
		server:  spice.NewServerStream(link),
		pending: ch.Link.pending,
	}
	if main {
		sc.console = &SPICEConsole{tokenHash: c.TokenHash, redial: ch.Redial, main: s}
	}
	if link.Channel != spice.ChannelDisplay {
		sc.safe.Store(true)
	}
	s.spice = sc
	return s
}

// Listed reports whether the session is a console of its own (an entry in
// the admin list, the active count and the "session started" lines): any
// but a SPICE console's later channel.
func (s *Session) Listed() bool { return s.spice == nil || s.spice.main }

// spiceFilter passes the browser's bytes for the server through the
// channel's ClientStream while it still looks at them.
func (s *Session) spiceFilter(p []byte) ([]byte, error) {
	ch := s.spice
	if ch.client.Passthrough() {
		return p, nil
	}
	out, err := ch.client.Filter(s.filtered[:0], p)
	s.filtered = out[:0]
	if err != nil {
		s.end(reasonNotSPICEClient, websocket.ClosePolicyViolation, reasonNotSPICEClient, err)
		return nil, err
	}
	return out, nil
}

// watchSPICE relays the server's first bytes through the channel's
// ServerStream, until the server is known to be SPICE and, on the main
// channel, MAIN_INIT has given the session id (registered before the
// browser sees it, so that the channels it opens next find their console).
// It reports whether the relay goes on.
func (s *Session) watchSPICE() bool {
	ch := s.spice
	for !ch.server.Done() {
		bp := relayBuffers.Get().(*[]byte)
		n, rerr := s.target.Read((*bp)[frameHeaderRoom:])
		if n > 0 {
			ferr := ch.server.Feed((*bp)[frameHeaderRoom : frameHeaderRoom+n])
			var refused *spice.LinkError
			switch {
			case errors.As(ferr, &refused):
				// The server refused the link: the browser is told why
				// (by these bytes), and the server made no channel.
				ch.safe.Store(true)
			case ferr != nil:
				relayBuffers.Put(bp)
				s.end(reasonNotSPICEServer, websocket.ClosePolicyViolation, reasonNotSPICEServer, ferr)
				return false
			}
			if id, ok := ch.server.SessionID(); ok && ch.main {
				ch.console.register(id)
			}
			if ch.server.DisplayStarted() {
				ch.client.ServerStarted()
				ch.safe.Store(true)
			}
			if werr := s.writeData(*bp, n); werr != nil {
				relayBuffers.Put(bp)
				s.end(reasonBrowserGone, 0, "", werr)
				return false
			}
			s.countToBrowser(n)
			if ferr != nil {
				// Nothing more to look at: the server closes.
				relayBuffers.Put(bp)
				return true
			}
		}
		relayBuffers.Put(bp)
		if errors.Is(rerr, io.EOF) {
			s.end(reasonTargetClosed, websocket.CloseNormalClosure, "SPICE server closed the connection", nil)
			return false
		}
		if rerr != nil {
			s.end(reasonTargetReadErr, websocket.CloseNormalClosure, "SPICE server closed the connection", rerr)
			return false
		}
	}
	return true
}

// stopTarget stops the relay from the server as the session ends. A
// display channel the server has not started must not be closed yet (see
// SPICEConsole): pumpToBrowser is woken instead, and the server's side is
// closed once both pumps are done (closeTarget).
func (s *Session) stopTarget() {
	if s.spice == nil || s.spice.safe.Load() {
		s.target.Close()
		return
	}
	_ = s.target.SetReadDeadline(time.Now())
	_ = s.target.SetWriteDeadline(time.Now().Add(s.handshakeTimeout))
}

// closeTarget closes the server's side once both pumps are done.
func (s *Session) closeTarget() {
	if s.spice == nil || s.spice.safe.Load() {
		s.target.Close()
		return
	}
	_ = s.target.SetDeadline(time.Time{})
	if err := spice.CloseServer(s.target, s.spice.client, &s.spice.server, s.handshakeTimeout); err != nil {
		s.logger.Warn("closing a SPICE display channel early", zap.String("session", s.spice.console.main.id), zap.Error(err))
	}
}

// spiceEndAs is how a SPICE console's later channel ends once the console
// has: as the console did, whatever ended the channel itself (the SPICE
// server closes it when the main channel goes).
func (s *Session) spiceEndAs(reason string, code int, text string) (string, int, string) {
	if s.spice == nil || s.spice.main {
		return reason, code, text
	}
	if r, c, t, ok := s.spice.console.endedAs(); ok {
		return r, c, t
	}
	return reason, code, text
}

// spiceEnded is the end of a SPICE channel's session: the main channel's
// ends the console's other channels.
func (s *Session) spiceEnded(reason string, code int, text string, err error) {
	if s.spice != nil && s.spice.main {
		s.spice.console.mainEnded(reason, code, text, err)
	}
}

// spiceFinished is the last of a SPICE channel's session. The console's
// "session ended" line, its place in the limits and its duration wait for
// the last of its channels, which ends after the main one.
func (s *Session) spiceFinished(reason string, err error) {
	c := s.spice.console
	if !c.remove(s) {
		if !s.spice.main {
			fields := []zap.Field{zap.String("console", c.main.id), zap.String("session", s.id), zap.String("reason", reason)}
			if err != nil {
				fields = append(fields, zap.Error(err))
			}
			s.logger.Debug("SPICE channel ended", fields...)
		}
		return
	}
	m := c.main
	if m.release != nil {
		m.release()
	}
	duration := time.Since(m.started)
	m.metrics.Duration.Observe(duration.Seconds())
	toBrowser, toTarget, _ := c.totals()
	c.mu.Lock()
	reason, err, opened := c.reason, c.endErr, c.opened
	c.mu.Unlock()
	fields := []zap.Field{
		zap.String("session", m.id),
		zap.String("client", m.client),
		zap.String("target", m.targetAddr),
		zap.String("token_hash", m.tokenHash),
		zap.Int64("bytes_to_browser", toBrowser),
		zap.Int64("bytes_to_target", toTarget),
		zap.Duration("duration", duration),
		zap.String("reason", reason),
		zap.Int("channels", opened),
	}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	m.logger.Info("session ended", fields...)
}

// Refuse ends a WebSocket that was upgraded but whose console will not
// run (a SPICE channel refused once its link message was read): the
// browser gets a close frame with code and text, then the connection
// closes, after the browser's answer or CloseGrace.
func Refuse(ws *websocket.Conn, code int, text string) {
	err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(CloseGrace))
	bc, ok := ws.NetConn().(*browserConn)
	if err != nil || !ok {
		ws.NetConn().Close()
		return
	}
	bc.lingerClose(CloseGrace, CloseGrace)
}
