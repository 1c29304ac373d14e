// Package console runs consoles: a client (a browser's WebSocket, over a
// hijacked HTTP/1.1 connection or an HTTP/2 or HTTP/3 stream, or a native
// VNC viewer's TLS connection) and a VNC server's connection, relayed both
// ways with stall checks, the end of the console (the close handshake, for
// a WebSocket with pings) and, for RFB-aware consoles, the client's RFB
// handshake and the view-only filter. It knows nothing of Caddy: a door
// admits the console and hands both connections to New or NewNative.
package console

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbproxy"
)

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

// Session is one console: a client (a browser's WebSocket, a native
// viewer) and the VNC server's connection, with a pump each way.
type Session struct {
	id             string
	side           clientSide // what differs between a WebSocket and a native viewer
	transport      string     // as listed: ws, h2, h3 or native
	browser        net.Conn   // the client's connection itself, for writing
	target         net.Conn
	targetAddr     string
	expiresAt      time.Time
	client         string
	tokenHash      string
	logger         *zap.Logger
	pingInterval   time.Duration
	idleTimeout    time.Duration
	maxMessageSize int64
	acceptText     bool
	started        time.Time
	// server is the HTTP server's name.
	server  string
	metrics *Metrics

	// RFB-aware sessions: how the proxy logged in to the VNC server, how
	// long the browser has for its handshake, and for a view-only console
	// or one with a clipboard policy the filter of its messages (used by
	// pumpToTarget only) and, with a clipboard policy, the filter of the
	// server's stream (used by pumpToBrowser only).
	login            *rfb.Result
	handshakeTimeout time.Duration
	filter           *rfbproxy.ClientFilter
	filtered         []byte
	serverFilter     *rfbproxy.ServerFilter
	// record is how the console is to be recorded, rec its recording
	// once started (nil: not recorded).
	record *Record
	rec    *sessionRecording

	// spice is a SPICE channel's part in its console (NewSPICE); nil for
	// any other console.
	spice *spiceChannel

	// endAt is when the session ends by itself, with endReason; zero for
	// never. release runs once it has ended.
	endAt     time.Time
	endReason string
	release   func()

	toBrowser atomic.Int64
	toTarget  atomic.Int64
	// controlSent counts the bytes of the control frames written to the
	// browser (pings, pongs, the close), which browserProgress leaves out.
	controlSent atomic.Int64
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
	// closeStall bounds the waits of the end on a browser that takes
	// nothing (stallBound; CloseGrace on shutdown). closeWait's state:
	// the browser's progress at its last look, and when it last moved.
	closeStall   time.Duration
	closeSeen    int64
	closeMoved   time.Time
	idleSeen     int64
	lastActive   time.Time
	browserStall stallCheck
	targetStall  stallCheck
	progressSeen int64     // browserProgress at the last tick
	progressAt   time.Time // when it last moved, as ticks see it
	sentSeen     int64     // toTarget at the last tick
	sentAt       time.Time // when it last moved or a write was under way, as ticks see it
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
	// AcceptText relays the browser's text messages as their UTF-8 bytes,
	// for serial consoles (Horizon's serial page sends text); without it
	// a text message ends the session with close 1003.
	AcceptText bool
	// HandshakeTimeout bounds the browser's RFB handshake of an RFB-aware
	// console.
	HandshakeTimeout time.Duration
	// Metrics count the session's bytes, life and length.
	Metrics *Metrics

	// Transport is how the client came, for the admin list: "ws"
	// (HTTP/1.1), "h2" or "h3"; NewNative sets "native".
	Transport string

	// Target is the VNC server (network:address) and ExpiresAt when its
	// token expires (zero: unknown), for logs and the admin list; Client
	// the browser's address and TokenHash the token's hash, for logs and
	// the admin list; Server the HTTP server's name.
	Target    string
	ExpiresAt time.Time
	Client    string
	TokenHash string
	Server    string
	// Login is how the proxy logged in to the VNC server, for an
	// RFB-aware console (nil: the browser speaks RFB with the server
	// itself); ViewOnly drops the browser's input (RFB-aware only).
	Login    *rfb.Result
	ViewOnly bool
	// Clipboard is the console's clipboard policy (RFB-aware only); one
	// other than the default frames both streams (pumpFramedToBrowser).
	Clipboard rfbproxy.Clipboard
	// Record, if set, records an RFB-aware console; the relay then copies
	// the VNC server's bytes rather than splicing them.
	Record *Record
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
	// RecordingFailures counts failed recordings; nil: not counted.
	RecordingFailures prometheus.Counter
}

// New makes the session of a browser's WebSocket, whose connection is a
// browser connection of this package (NewBrowserConn, Stream), and the
// VNC server's connection; Start runs it.
func New(ws *websocket.Conn, target net.Conn, c Config) *Session {
	return newSession(wsClient{ws}, ws.NetConn().(*browserConn), target, c)
}

// NewNative makes the session of a native VNC viewer admitted on the
// native listener (its SecurityResult OK sent) and the VNC server's
// connection, which the proxy logged in to (c.Login); Start runs it. The
// session reads the viewer's ClientInit within HandshakeTimeout and sends
// it on (shared when view-only), then relays. RFB has no keepalive a
// viewer would answer, so there are no pings (PingInterval is ignored);
// the stall checks, the idle timeout and TCP's own keepalive bound a
// viewer that vanished.
func NewNative(nc *rfbproxy.NativeClient, target net.Conn, c Config) *Session {
	c.PingInterval = 0
	c.Transport = "native"
	return newSession(nativeClient{nc}, newBrowserConn(nc.TLS), target, c)
}

func newSession(cl clientSide, bc *browserConn, target net.Conn, c Config) *Session {
	s := &Session{
		metrics:          c.Metrics,
		server:           c.Server,
		id:               strconv.FormatUint(rand.Uint64(), 36),
		side:             cl,
		transport:        c.Transport,
		bc:               bc,
		browser:          bc.sock,
		target:           target,
		targetAddr:       c.Target,
		expiresAt:        c.ExpiresAt,
		client:           c.Client,
		tokenHash:        c.TokenHash,
		logger:           c.Logger,
		pingInterval:     c.PingInterval,
		idleTimeout:      c.IdleTimeout,
		maxMessageSize:   c.MaxMessageSize,
		acceptText:       c.AcceptText,
		started:          time.Now(),
		handshakeTimeout: c.HandshakeTimeout,
		login:            c.Login,
		endAt:            c.EndAt,
		endReason:        c.EndReason,
		release:          c.Release,
		record:           c.Record,
		done:             make(chan struct{}),
	}
	if c.Login != nil && (c.ViewOnly || c.Clipboard.Filtered()) {
		s.filter = &rfbproxy.ClientFilter{ViewOnly: c.ViewOnly, MaxLength: c.MaxMessageSize}
	}
	if c.Login != nil && c.Clipboard.Filtered() {
		s.serverFilter = rfbproxy.NewServerFilter(c.Clipboard)
		s.filter.Clipboard, s.filter.Server = c.Clipboard, s.serverFilter
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
	if s.spice != nil {
		if err := s.spice.console.add(s); err != nil {
			s.browser.Close()
			s.target.Close()
			return err
		}
	}
	s.heard.Store(time.Now().UnixNano())
	s.side.start(s)

	recordingFailed := s.startRecording(s.record)
	s.pumps.Store(2)
	Sessions.add(s)
	fields := []zap.Field{
		zap.String("session", s.id),
		zap.String("client", s.client),
		zap.String("target", s.targetAddr),
		zap.String("token_hash", s.tokenHash),
		zap.String("transport", s.transport),
	}
	if s.login != nil {
		fields = append(fields, zap.Stringer("vnc_security", s.login), zap.Bool("view_only", s.filter != nil && s.filter.ViewOnly))
		if s.serverFilter != nil {
			fields = append(fields, zap.Stringer("clipboard", s.filter.Clipboard))
		}
	}
	if s.rec != nil {
		fields = append(fields, zap.String("recording", s.rec.rec.ID()))
	}
	if s.spice != nil {
		link := s.spice.client
		l, _ := link.Link()
		fields = append(fields, zap.Stringer("spice_channel", l.Channel))
		if !s.spice.main {
			// One console, one "session started": its later channels
			// are the main channel's.
			s.logger.Debug("SPICE channel joined", append(fields, zap.String("console", s.spice.console.main.id))...)
			fields = nil
		}
	}
	if fields != nil {
		s.logger.Info("session started", fields...)
	}

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

	if recordingFailed != nil {
		recordingFailed()
	}
	go s.pumpToBrowser(greeting)
	go s.pumpToTarget()
	return nil
}

// ID is the session's id, as logged and listed.
func (s *Session) ID() string { return s.id }

// TokenHash is the hash of the session's token.
func (s *Session) TokenHash() string { return s.tokenHash }

// Target is the VNC server, network:address.
func (s *Session) Target() string { return s.targetAddr }
