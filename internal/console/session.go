// Package console runs consoles: a browser's WebSocket, over a hijacked
// HTTP/1.1 connection or an HTTP/2 or HTTP/3 stream, and a VNC server's
// connection, relayed both ways with pings, stall checks, the close
// handshake and, for RFB-aware consoles, the browser's RFB handshake and
// the view-only filter. It knows nothing of Caddy: the handler checks the
// request, dials the VNC server, upgrades, and hands both connections to
// New.
package console

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfbproxy"
	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

// relayBufferSize is how many bytes the pumps read at a time, into pooled
// buffers. A session holds one only while bytes are moving, never while idle.
const relayBufferSize = 64 << 10

// frameHeaderRoom is the room a relay buffer leaves in front of the bytes
// read from the VNC server, for the WebSocket frame header (at most 10
// bytes for an unmasked frame), so that header and payload go out in one
// write without a copy.
const frameHeaderRoom = 10

// CloseGrace is how long a session waits for the browser to answer its
// close frame before it drops the connection.
const CloseGrace = time.Second

// DefaultPingInterval paces the stall checks of sessions without pings.
const DefaultPingInterval = 30 * time.Second

var (
	relayBuffers = sync.Pool{New: func() any {
		b := make([]byte, frameHeaderRoom+relayBufferSize)
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

// Why a session ended, as logged.
const (
	reasonTargetClosed   = "vnc server closed"
	reasonBrowserClosed  = "browser closed"
	reasonBrowserGone    = "browser connection lost"
	reasonPingTimeout    = "browser did not answer pings"
	reasonIdleTimeout    = "idle timeout"
	reasonTooBig         = "message too big"
	reasonProtocolError  = "websocket protocol error"
	reasonTextMessage    = "text message refused"
	reasonShutdown       = "server shutting down"
	reasonTargetReadErr  = "reading from vnc server failed"
	reasonTargetWriteErr = "writing to vnc server failed"
	reasonBrowserStalled = "browser stopped reading"
	reasonTargetStalled  = "vnc server stopped reading"
	reasonInternal       = "internal error"
)

// session is one console: a browser's WebSocket and the VNC server's
// connection, with a pump each way.
type Session struct {
	id             string
	ws             *websocket.Conn
	browser        net.Conn // the socket under ws.NetConn(), for writing
	target         net.Conn
	targetAddr     tokenresolver.Target
	client         string
	tokenHash      string
	logger         *zap.Logger
	pingInterval   time.Duration
	idleTimeout    time.Duration
	maxMessageSize int64
	started        time.Time
	// server is the HTTP server's name.
	server  string
	metrics Metrics

	// RFB-aware sessions: how the proxy logged in to the VNC server, how
	// long the browser has for its handshake, and for a view-only console
	// the filter of its messages (used by pumpToTarget only).
	login            *rfbproxy.Result
	handshakeTimeout time.Duration
	filter           *rfbproxy.ViewOnlyFilter
	filtered         []byte

	// endAt is when the session ends by itself, with endReason; zero for
	// never. release runs once it has ended.
	endAt     time.Time
	endReason string
	release   func()

	toBrowser atomic.Int64
	toTarget  atomic.Int64
	// A write to the browser or to the VNC server is under way; tick ends a
	// session whose writes make no progress.
	toBrowserBusy atomic.Bool
	toTargetBusy  atomic.Bool
	// heard is when the browser last sent anything (Unix nanoseconds).
	heard atomic.Int64
	pumps atomic.Int32
	done  chan struct{}
	// writers counts the goroutines other than the pumps (pings, end) that
	// may still write to the browser; the session finishes only after them,
	// so that nothing writes to a connection it has given up.
	writers sync.WaitGroup

	// bc is the browser's connection as gorilla has it; its lock orders
	// every frame written to the browser (browser is its socket).
	bc *browserConn

	mu         sync.Mutex // guards the fields below
	ended      bool
	reason     string
	endErr     error
	pingTimer  *time.Timer
	idleTimer  *time.Timer
	closeTimer *time.Timer
	endTimer   *time.Timer
	// closeWait's state: when the wait began, and the browser's unsent
	// bytes at its last look (-1 before the first).
	closeWaitStart time.Time
	closeUnsent    int
	idleSeen       int64
	lastActive     time.Time
	browserStall   stallCheck
	targetStall    stallCheck
	progressSeen   int64     // toBrowser at the last tick
	progressAt     time.Time // when toBrowser last moved, as ticks see it
}

// Config is what a console is made of, besides its two connections.
type Config struct {
	// Logger gets the session's lines; they carry the token's hash only.
	Logger *zap.Logger
	// PingInterval: how often the browser is pinged, and the pace of the
	// stall checks (DefaultPingInterval when pings are off, 0).
	PingInterval time.Duration
	// IdleTimeout ends a session in which no bytes move for this long; 0:
	// never.
	IdleTimeout time.Duration
	// MaxMessageSize is the largest message taken from the browser (close
	// 1009 beyond it).
	MaxMessageSize int64
	// HandshakeTimeout bounds the browser's RFB handshake of an RFB-aware
	// console.
	HandshakeTimeout time.Duration
	// Metrics count the session's bytes, life and length.
	Metrics Metrics

	// Target is the VNC server, as the token's resolver gave it; Client
	// the browser's address and TokenHash the token's hash, for logs and
	// the admin list; Server the HTTP server's name.
	Target    tokenresolver.Target
	Client    string
	TokenHash string
	Server    string
	// Login is how the proxy logged in to the VNC server, for an
	// RFB-aware console (nil: the browser speaks RFB with the server
	// itself); ViewOnly drops the browser's input (RFB-aware only).
	Login    *rfbproxy.Result
	ViewOnly bool
	// EndAt ends the session by itself, with close 1008 and EndReason as
	// the reason and the close frame's text; zero: never.
	EndAt     time.Time
	EndReason string
	// Release is called once the session has ended (not when Start fails).
	Release func()
}

// Metrics are the collectors a session counts in.
type Metrics struct {
	BytesToBrowser prometheus.Counter
	BytesToTarget  prometheus.Counter
	Active         prometheus.Gauge
	Duration       prometheus.Observer
}

// New makes the session of a browser's WebSocket, whose connection is a
// browser connection of this package (NewBrowserConn, Stream), and the
// VNC server's connection; Start runs it.
func New(ws *websocket.Conn, target net.Conn, c Config) *Session {
	bc := ws.NetConn().(*browserConn)
	s := &Session{
		metrics:          c.Metrics,
		server:           c.Server,
		id:               strconv.FormatUint(rand.Uint64(), 36),
		ws:               ws,
		bc:               bc,
		browser:          bc.sock,
		target:           target,
		targetAddr:       c.Target,
		client:           c.Client,
		tokenHash:        c.TokenHash,
		logger:           c.Logger,
		pingInterval:     c.PingInterval,
		idleTimeout:      c.IdleTimeout,
		maxMessageSize:   c.MaxMessageSize,
		started:          time.Now(),
		handshakeTimeout: c.HandshakeTimeout,
		login:            c.Login,
		endAt:            c.EndAt,
		endReason:        c.EndReason,
		release:          c.Release,
		done:             make(chan struct{}),
	}
	if c.Login != nil && c.ViewOnly {
		s.filter = &rfbproxy.ViewOnlyFilter{MaxLength: c.MaxMessageSize}
	}
	return s
}

// Start registers the session and starts its pumps; greeting, the VNC
// server's bytes read while checking it, goes to the browser first. On an
// error both connections are closed and the session is not registered.
func (s *Session) Start(greeting []byte) error {
	// Deadlines the HTTP server set on the connection no longer apply.
	if err := s.browser.SetDeadline(time.Time{}); err != nil {
		s.browser.Close()
		s.target.Close()
		return err
	}
	s.ws.SetReadLimit(s.maxMessageSize)
	s.heard.Store(time.Now().UnixNano())
	s.ws.SetPongHandler(func(string) error {
		s.heard.Store(time.Now().UnixNano())
		return nil
	})
	s.ws.SetPingHandler(func(data string) error {
		s.heard.Store(time.Now().UnixNano())
		if err := s.tryWriteControl(websocket.PongMessage, []byte(data), 2*s.tickInterval()); err != nil && !errors.Is(err, errWriteBusy) {
			s.endOnControlError(err, "writing a pong")
		}
		return nil
	})
	// The browser's close is echoed by end, after the frame in flight.
	s.ws.SetCloseHandler(func(int, string) error { return nil })

	s.pumps.Store(2)
	Sessions.add(s)
	fields := []zap.Field{
		zap.String("session", s.id),
		zap.String("client", s.client),
		zap.Stringer("target", s.targetAddr),
		zap.String("token_hash", s.tokenHash),
	}
	if s.login != nil {
		fields = append(fields, zap.Stringer("vnc_security", s.login), zap.Bool("view_only", s.filter != nil))
	}
	s.logger.Info("session started", fields...)

	s.mu.Lock()
	s.progressAt = s.started
	s.pingTimer = time.AfterFunc(s.tickInterval(), s.tick)
	if s.idleTimeout > 0 {
		s.lastActive = s.started
		s.idleTimer = time.AfterFunc(s.idleCheckInterval(), s.checkIdle)
	}
	if !s.endAt.IsZero() {
		s.endTimer = time.AfterFunc(time.Until(s.endAt), func() {
			s.end(s.endReason, websocket.ClosePolicyViolation, s.endReason, nil)
		})
	}
	s.mu.Unlock()

	go s.pumpToBrowser(greeting)
	go s.pumpToTarget()
	return nil
}

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
	if s.spliceToBrowser() {
		return
	}
	read := pooledReader(s.target)
	for {
		bp, n, rerr := read()
		if n > 0 {
			if werr := s.writeData(*bp, n); werr != nil {
				relayBuffers.Put(bp)
				s.end(reasonBrowserGone, 0, "", werr)
				return
			}
			s.countToBrowser(n)
		}
		if bp != nil {
			relayBuffers.Put(bp)
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

// writeData sends buf[frameHeaderRoom:frameHeaderRoom+n] to the browser as
// one binary message: the frame header goes into the room in front of the
// payload, and header and payload go out in one write.
func (s *Session) writeData(buf []byte, n int) error {
	start := putFrameHeader(buf[:frameHeaderRoom], n)
	s.bc.mu.Lock()
	defer s.bc.mu.Unlock()
	if s.bc.closeSent.Load() {
		return errCloseSent
	}
	s.toBrowserBusy.Store(true)
	_, err := s.browser.Write(buf[start : frameHeaderRoom+n])
	s.toBrowserBusy.Store(false)
	if err != nil {
		// A frame cut short: nothing may follow it.
		s.bc.closeSent.Store(true)
	}
	return err
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

// writeControlLocked sends a control frame (payload at most 125 bytes);
// the caller holds bc.mu, so the frame goes after any data frame being
// written. Nothing follows a close frame.
func (s *Session) writeControlLocked(messageType int, payload []byte, deadline time.Time) error {
	if s.bc.closeSent.Load() {
		return errCloseSent
	}
	frame := make([]byte, 2, 2+len(payload))
	frame[0], frame[1] = 0x80|byte(messageType), byte(len(payload))
	frame = append(frame, payload...)
	_ = s.browser.SetWriteDeadline(deadline)
	_, err := s.browser.Write(frame)
	// Data writes must not inherit the deadline.
	_ = s.browser.SetWriteDeadline(time.Time{})
	if err != nil || messageType == websocket.CloseMessage {
		s.bc.closeSent.Store(true)
	}
	return err
}

// endOnControlError ends a session whose ping or pong could not be
// written: the frame may have been cut short, so the stream is lost. A
// write that took two intervals is a browser that stopped reading, as for
// data frames.
func (s *Session) endOnControlError(err error, what string) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		s.end(reasonBrowserStalled, 0, "", fmt.Errorf("%s: %w", what, err))
		return
	}
	s.end(reasonBrowserGone, 0, "", fmt.Errorf("%s: %w", what, err))
}

// errWriteBusy: a ping or pong was not sent because a data frame was being
// written, which keeps the connection alive by itself.
var errWriteBusy = errors.New("a data frame is being written")

// tryWriteControl sends a ping or a pong unless a data frame is being
// written: they must not wait behind a browser that does not read. The
// write itself counts as one in progress for the stall check.
func (s *Session) tryWriteControl(messageType int, data []byte, timeout time.Duration) error {
	if !s.bc.mu.TryLock() {
		return errWriteBusy
	}
	defer s.bc.mu.Unlock()
	s.toBrowserBusy.Store(true)
	defer s.toBrowserBusy.Store(false)
	return s.writeControlLocked(messageType, data, time.Now().Add(timeout))
}

// heldBufferReader reads c into a pooled buffer, after its frameHeaderRoom,
// and holds the buffer while it waits: for connections whose socket is out
// of reach.
func heldBufferReader(c net.Conn) func() (*[]byte, int, error) {
	return func() (*[]byte, int, error) {
		bp := relayBuffers.Get().(*[]byte)
		n, err := c.Read((*bp)[frameHeaderRoom:])
		return bp, n, err
	}
}

// pumpToTarget relays the browser's binary messages to the VNC server. It
// takes a buffer only once a message has begun.
func (s *Session) pumpToTarget() {
	defer s.pumpDone()
	defer s.recoverPanic()
	if s.login != nil && s.acceptBrowser() != nil {
		return
	}
	for {
		mt, r, err := s.ws.NextReader()
		if err != nil {
			s.endOnBrowserError(err)
			return
		}
		if mt != websocket.BinaryMessage {
			s.end(reasonTextMessage, websocket.CloseUnsupportedData, "only binary messages are accepted", nil)
			return
		}
		s.heard.Store(time.Now().UnixNano())
		bp := relayBuffers.Get().(*[]byte)
		err = s.copyMessage(r, *bp)
		relayBuffers.Put(bp)
		if err != nil {
			return
		}
	}
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

func (s *Session) endOnBrowserError(err error) {
	var ce *websocket.CloseError
	switch {
	case errors.Is(err, websocket.ErrReadLimit) && s.bc.closeSent.Load():
		// gorilla has sent close 1009 already.
		s.end(reasonTooBig, 0, "", nil)
	case errors.Is(err, websocket.ErrReadLimit):
		// A frame length with the top bit set, which gorilla refuses
		// without a close frame (RFC 6455 5.2: the bit must be 0).
		s.end(reasonProtocolError, websocket.CloseProtocolError, "invalid frame length", err)
	case errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure:
		// Echo the browser's close (RFC 6455 5.5.1), after the frame in
		// flight; a close without a code gets one without a code.
		s.end(reasonBrowserClosed, ce.Code, "", nil)
	default:
		s.end(reasonBrowserGone, 0, "", err)
	}
}

func (s *Session) countToBrowser(n int) {
	s.toBrowser.Add(int64(n))
	s.metrics.BytesToBrowser.Add(float64(n))
}

func (s *Session) countToTarget(n int) {
	s.toTarget.Add(int64(n))
	s.metrics.BytesToTarget.Add(float64(n))
}

// end ends the session once: it records why, sends the browser a close
// frame with code (none when code is 0), and closes the VNC server's
// connection, which ends pumpToBrowser. The close frame waits for the data
// frame being written, for at most CloseGrace; the browser then gets
// CloseGrace to answer before its connection is dropped. Without a close
// frame (from end, or from gorilla on a protocol error) the connection is
// dropped at once. Either way both pumps return promptly, and the last one
// closes the browser's connection (pumpDone).
func (s *Session) end(reason string, code int, text string, err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	s.reason = reason
	s.endErr = err
	stopTimer(s.pingTimer)
	stopTimer(s.idleTimer)
	stopTimer(s.endTimer)
	s.writers.Add(1)
	s.mu.Unlock()
	defer s.writers.Done()

	s.target.Close()
	if code != 0 {
		// The close frame goes after the data frame being written.
		if code == websocket.CloseGoingAway {
			// Shutting down: that frame gets CloseGrace, no more.
			_ = s.browser.SetWriteDeadline(time.Now().Add(CloseGrace))
			s.bc.mu.Lock()
		} else {
			s.lockAfterFrameInFlight()
		}
		werr := s.writeControlLocked(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(CloseGrace))
		s.bc.mu.Unlock()
		if werr != nil {
			s.bc.abort()
			return
		}
	}
	if !s.bc.closeSent.Load() {
		// No close frame (the browser is gone or stalled): drop it.
		s.bc.abort()
		return
	}
	// The browser's answer ends pumpToTarget; one that does not answer is
	// dropped (closeWait).
	s.mu.Lock()
	s.closeWaitStart = time.Now()
	s.closeUnsent = -1
	if left, ok := s.bc.unsent(); ok {
		s.closeUnsent = left
	}
	s.closeTimer = time.AfterFunc(CloseGrace, s.closeWait)
	s.mu.Unlock()
}

// lockAfterFrameInFlight takes the write lock once the data frame being
// written is done, waiting as long as the browser keeps taking bytes (the
// VNC server's side is closed, so what is left is finite); a browser that
// takes nothing for CloseGrace has the write cut short.
func (s *Session) lockAfterFrameInFlight() {
	if s.bc.mu.TryLock() {
		return
	}
	last, _ := s.bc.unsent()
	lastMoved := s.toBrowser.Load()
	cut := time.Now().Add(CloseGrace)
	for {
		time.Sleep(20 * time.Millisecond)
		if s.bc.mu.TryLock() {
			return
		}
		left, _ := s.bc.unsent()
		if moved := s.toBrowser.Load(); left < last || moved != lastMoved {
			last, lastMoved, cut = left, moved, time.Now().Add(CloseGrace)
		}
		if time.Now().After(cut) {
			_ = s.browser.SetWriteDeadline(time.Now())
			s.bc.mu.Lock()
			return
		}
	}
}

// closeWait runs CloseGrace after the close frame, and again while the
// browser still takes the bytes queued before it: a browser on a slow link
// reading a backlog must not lose its tail to the reset. One that takes
// nothing for CloseGrace, or that has had two intervals, is dropped.
func (s *Session) closeWait() {
	s.mu.Lock()
	defer s.mu.Unlock()
	left, ok := s.bc.unsent()
	progress := ok && left > 0 && left < s.closeUnsent
	if progress && time.Since(s.closeWaitStart) < 2*s.tickInterval() {
		s.closeUnsent = left
		s.closeTimer.Reset(CloseGrace)
		return
	}
	s.bc.giveUp()
}

// recoverPanic ends the session with close code 1011 if its pump panics,
// so that one broken session cannot take the process down.
func (s *Session) recoverPanic() {
	v := recover()
	if v == nil {
		return
	}
	s.logger.Error("session failed", zap.String("session", s.id), zap.Any("panic", v), zap.Stack("stack"))
	s.end(reasonInternal, websocket.CloseInternalServerErr, "internal error", fmt.Errorf("panic: %v", v))
}

// pumpDone is called by each pump as it returns; the last one closes what
// is left, unregisters the session and logs its end.
func (s *Session) pumpDone() {
	if s.pumps.Add(-1) != 0 {
		return
	}
	s.mu.Lock()
	stopTimer(s.closeTimer)
	reason, err := s.reason, s.endErr
	s.mu.Unlock()
	s.target.Close()
	s.writers.Wait()
	if s.bc.closeSent.Load() {
		// After a close frame, or a write that failed (then lingerClose
		// finds the connection closed already).
		s.bc.lingerClose(CloseGrace)
	} else {
		s.browser.Close()
	}
	Sessions.remove(s)
	if s.release != nil {
		s.release()
	}

	duration := time.Since(s.started)
	s.metrics.Duration.Observe(duration.Seconds())
	fields := []zap.Field{
		zap.String("session", s.id),
		zap.String("client", s.client),
		zap.Stringer("target", s.targetAddr),
		zap.String("token_hash", s.tokenHash),
		zap.Int64("bytes_to_browser", s.toBrowser.Load()),
		zap.Int64("bytes_to_target", s.toTarget.Load()),
		zap.Duration("duration", duration),
		zap.String("reason", reason),
	}
	if s.filter != nil {
		fields = append(fields, zap.Int64("dropped_input", s.filter.Dropped))
	}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	s.logger.Info("session ended", fields...)
	close(s.done)
}

// isEnded reports whether the session is ending or has ended.
func (s *Session) isEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// tick runs every ping interval (every DefaultPingInterval when pings are
// off): it ends a session whose writes make no progress, and pings the
// browser.
func (s *Session) tick() {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	now := time.Now()
	moved := s.toBrowser.Load()
	toBrowser := s.browserStall.stalled(s.toBrowserBusy.Load(), moved)
	toTarget := s.targetStall.stalled(s.toTargetBusy.Load(), s.toTarget.Load())
	// The browser is alive while it sends something (data, pongs, pings)
	// or takes what is written to it: a browser busy receiving a stream
	// need not answer pings, which wait for no data frame.
	if moved != s.progressSeen {
		s.progressSeen, s.progressAt = moved, now
	}
	alive := time.Unix(0, s.heard.Load())
	if s.progressAt.After(alive) {
		alive = s.progressAt
	}
	silent := s.pingInterval > 0 && now.Sub(alive) >= 2*s.pingInterval
	s.writers.Add(1)
	s.mu.Unlock()
	defer s.writers.Done()
	switch {
	case toBrowser:
		// It cannot take a close frame either.
		s.end(reasonBrowserStalled, 0, "", fmt.Errorf("no bytes written to the browser for %v", 2*s.tickInterval()))
		return
	case toTarget:
		s.end(reasonTargetStalled, websocket.CloseNormalClosure, "VNC server not responding", fmt.Errorf("no bytes written to the vnc server for %v", 2*s.tickInterval()))
		return
	case silent:
		s.end(reasonPingTimeout, 0, "", fmt.Errorf("nothing from the browser and nothing taken by it for %v", now.Sub(alive).Round(time.Millisecond)))
		return
	}
	if s.pingInterval > 0 {
		// A ping waits for no data frame: moving data keeps the connection
		// alive, and a browser that stops reading misses the pongs it would
		// owe, so the read deadline ends its session.
		if err := s.tryWriteControl(websocket.PingMessage, nil, 2*s.tickInterval()); err != nil && !errors.Is(err, errWriteBusy) {
			s.endOnControlError(err, "writing a ping")
			return
		}
	}
	s.mu.Lock()
	if !s.ended {
		s.pingTimer.Reset(s.tickInterval())
	}
	s.mu.Unlock()
}

func (s *Session) tickInterval() time.Duration {
	if s.pingInterval > 0 {
		return s.pingInterval
	}
	return DefaultPingInterval
}

// stallCheck tells a direction whose write has made no progress for two
// ticks: a write is under way and the byte count has not moved.
type stallCheck struct {
	seen  int64
	ticks int
}

func (c *stallCheck) stalled(busy bool, moved int64) bool {
	if !busy || moved != c.seen {
		c.seen, c.ticks = moved, 0
		return false
	}
	c.ticks++
	return c.ticks >= 2
}

// checkIdle ends the session when no bytes moved for idleTimeout.
func (s *Session) checkIdle() {
	now := time.Now()
	moved := s.toBrowser.Load() + s.toTarget.Load()
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	if moved != s.idleSeen {
		s.idleSeen, s.lastActive = moved, now
	}
	idle := now.Sub(s.lastActive) >= s.idleTimeout
	if !idle {
		s.idleTimer.Reset(s.idleCheckInterval())
	}
	s.mu.Unlock()
	if idle {
		s.end(reasonIdleTimeout, websocket.CloseNormalClosure, "idle timeout", nil)
	}
}

// idleCheckInterval: an idle session ends between idleTimeout and
// 1.25 × idleTimeout after its last byte.
func (s *Session) idleCheckInterval() time.Duration {
	return max(s.idleTimeout/4, 10*time.Millisecond)
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// registry holds the live sessions of the process. Sessions outlive the
// configs that started them, so the registry is the process's: on exit,
// every session, whichever config started it, gets its close frame.
type registry struct {
	mu sync.Mutex
	m  map[*Session]struct{}
}

// Sessions are the live sessions of the process.
var Sessions = &registry{m: make(map[*Session]struct{})}

func (r *registry) add(s *Session) {
	r.mu.Lock()
	r.m[s] = struct{}{}
	r.mu.Unlock()
	s.metrics.Active.Inc()
}

func (r *registry) remove(s *Session) {
	r.mu.Lock()
	delete(r.m, s)
	r.mu.Unlock()
	s.metrics.Active.Dec()
}

// Len is how many sessions are live.
func (r *registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

func (r *registry) snapshot() []*Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	live := make([]*Session, 0, len(r.m))
	for s := range r.m {
		live = append(live, s)
	}
	return live
}

// CloseAll ends every live session with the close code and waits, at
// most a few seconds, for them to finish.
func (r *registry) CloseAll(code int, text string) {
	live := r.snapshot()
	// In parallel: a session whose browser does not read holds its end
	// for up to CloseGrace, and must not hold up the others.
	var ending sync.WaitGroup
	for _, s := range live {
		ending.Go(func() { s.end(reasonShutdown, code, text, nil) })
	}
	ending.Wait()
	deadline := time.After(CloseGrace + time.Second)
	for _, s := range live {
		select {
		case <-s.done:
		case <-deadline:
			return
		}
	}
}

// EndMatching ends the live sessions match selects, with close code 1008
// and reason as the close frame's text and the logged reason, and returns
// how many it ended.
func (r *registry) EndMatching(match func(*Session) bool, reason string) int {
	n := 0
	var ending sync.WaitGroup
	for _, s := range r.snapshot() {
		if !match(s) || s.isEnded() {
			continue
		}
		n++
		ending.Go(func() { s.end(reason, websocket.ClosePolicyViolation, reason, nil) })
	}
	ending.Wait()
	return n
}

// Find returns the live session with this id, or nil.
func (r *registry) Find(id string) *Session {
	for _, s := range r.snapshot() {
		if s.id == id && !s.isEnded() {
			return s
		}
	}
	return nil
}

// List describes every live session, oldest first.
func (r *registry) List() []Info {
	live := r.snapshot()
	out := make([]Info, 0, len(live))
	for _, s := range live {
		if !s.isEnded() {
			out = append(out, s.Info())
		}
	}
	slices.SortFunc(out, func(a, b Info) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Info is what the admin API shows of a session: never its token or a
// VNC password.
type Info struct {
	ID             string     `json:"id"`
	Server         string     `json:"server"`
	Client         string     `json:"client"`
	Target         string     `json:"target"`
	TokenHash      string     `json:"token_hash"`
	Started        time.Time  `json:"started"`
	BytesToBrowser int64      `json:"bytes_to_browser"`
	BytesToTarget  int64      `json:"bytes_to_target"`
	ViewOnly       bool       `json:"view_only"`
	ExpiresAt      *time.Time `json:"expires_at"`
}

// Info describes the session.
func (s *Session) Info() Info {
	i := Info{
		ID:             s.id,
		Server:         s.server,
		Client:         s.client,
		Target:         s.targetAddr.String(),
		TokenHash:      s.tokenHash,
		Started:        s.started.UTC().Truncate(time.Millisecond),
		BytesToBrowser: s.toBrowser.Load(),
		BytesToTarget:  s.toTarget.Load(),
		ViewOnly:       s.filter != nil,
	}
	if !s.targetAddr.ExpiresAt.IsZero() {
		at := s.targetAddr.ExpiresAt.UTC()
		i.ExpiresAt = &at
	}
	return i
}

// ID is the session's id, as logged and listed.
func (s *Session) ID() string { return s.id }

// TokenHash is the hash of the session's token.
func (s *Session) TokenHash() string { return s.tokenHash }

// Target is the VNC server, as the resolver gave it.
func (s *Session) Target() tokenresolver.Target { return s.targetAddr }
