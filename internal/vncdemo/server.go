package vncdemo

import (
	"bufio"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// Default geometry and name.
const (
	DefaultWidth  = 800
	DefaultHeight = 600
	DefaultName   = "vncdemo"
	// MaxSize bounds Width and Height.
	MaxSize = 8192
)

const (
	handshakeTimeout = 30 * time.Second
	writeTimeout     = 30 * time.Second
)

// ErrAuthFailed is the error a session ends with when the client's password
// is wrong.
var ErrAuthFailed = errors.New("vncdemo: authentication failed")

// Server is the demo VNC server. The zero value serves an 800x600 desktop
// named "vncdemo" without a password. Set the fields before the first Serve.
type Server struct {
	// Width and Height of the framebuffer. Default: 800x600.
	Width, Height int
	// Name is the desktop name sent in ServerInit. Default: "vncdemo".
	Name string
	// Password enables VNC Authentication; only its first 8 bytes count,
	// as in every VNC server. Empty means security type None.
	Password string
	// Logger receives connection events. Default: none.
	Logger *slog.Logger

	mu        sync.Mutex
	closed    bool
	canvas    *canvas
	log       *slog.Logger
	stop      chan struct{}
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
}

// start checks the configuration and starts the animation. The caller holds
// s.mu.
func (s *Server) start() error {
	if s.canvas != nil {
		return nil
	}
	if s.Width == 0 && s.Height == 0 {
		s.Width, s.Height = DefaultWidth, DefaultHeight
	}
	if s.Width < 1 || s.Height < 1 || s.Width > MaxSize || s.Height > MaxSize {
		return fmt.Errorf("vncdemo: geometry %dx%d out of range 1..%d", s.Width, s.Height, MaxSize)
	}
	if s.Name == "" {
		s.Name = DefaultName
	}
	s.log = s.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.canvas = newCanvas(s.Width, s.Height, time.Now())
	s.stop = make(chan struct{})
	s.listeners = make(map[net.Listener]struct{})
	s.conns = make(map[net.Conn]struct{})
	s.wg.Add(1)
	go s.animate()
	return nil
}

func (s *Server) animate() {
	defer s.wg.Done()
	t := time.NewTicker(frameTicker)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.canvas.tick(now)
		}
	}
}

// Serve accepts connections on l and serves each until Close. It returns nil
// after Close, or the error that stopped accepting. Serve may be called for
// several listeners at once; they share one framebuffer.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	if err := s.start(); err != nil {
		s.mu.Unlock()
		return err
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// Close stops every Serve, closes all client connections and waits until
// their goroutines and the animation have ended.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		for l := range s.listeners {
			l.Close()
		}
		for c := range s.conns {
			c.Close()
		}
		if s.stop != nil {
			close(s.stop)
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	log := s.log.With("remote", c.RemoteAddr().String())
	log.Debug("client connected")
	err := s.session(c, log)
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		log.Debug("client disconnected")
	default:
		log.Info("client disconnected", "error", err)
	}
}

// session runs the handshake and then the client's message loop.
func (s *Server) session(c net.Conn, log *slog.Logger) error {
	br := bufio.NewReaderSize(c, 4096)
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := s.handshake(c, br); err != nil {
		return err
	}
	_ = c.SetDeadline(time.Time{})

	enc, _ := newEncoder(rfb.PixelFormat32)
	ss := &session{
		canvas: s.canvas,
		enc:    enc,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	s.canvas.observe(ss)
	defer s.canvas.forget(ss)

	writerDone := make(chan error, 1)
	go func() { writerDone <- ss.writeUpdates(c) }()
	var err error
	for {
		var m clientMessage
		if m, err = readClientMessage(br); err != nil {
			break
		}
		if err = ss.apply(m); err != nil {
			break
		}
	}
	close(ss.done)
	c.Close()
	if werr := <-writerDone; werr != nil && !errors.Is(werr, net.ErrClosed) {
		log.Debug("sending updates failed", "error", werr)
	}
	return err
}

// handshake runs the server side of the RFB handshake up to ServerInit.
func (s *Server) handshake(c net.Conn, br *bufio.Reader) error {
	if _, err := c.Write(rfb.AppendVersion(nil, 3, 8)); err != nil {
		return err
	}
	var v [rfb.VersionLen]byte
	if _, err := io.ReadFull(br, v[:]); err != nil {
		return fmt.Errorf("reading client version: %w", err)
	}
	major, minor, err := rfb.ParseVersion(v[:])
	if err != nil {
		return err
	}
	if major != 3 {
		return fmt.Errorf("unsupported client version %d.%d", major, minor)
	}
	switch {
	case minor >= 8:
		minor = 8
	case minor == 7:
	default:
		minor = 3
	}

	sec := uint8(rfb.SecurityNone)
	if s.Password != "" {
		sec = rfb.SecurityVNCAuth
	}
	var b [4]byte
	if minor == 3 {
		binary.BigEndian.PutUint32(b[:], uint32(sec))
		if _, err := c.Write(b[:]); err != nil {
			return err
		}
	} else {
		if _, err := c.Write([]byte{1, sec}); err != nil {
			return err
		}
		if _, err := io.ReadFull(br, b[:1]); err != nil {
			return fmt.Errorf("reading security type: %w", err)
		}
		if b[0] != sec {
			s.securityFailure(c, minor, "security type not offered")
			return fmt.Errorf("client chose security type %d", b[0])
		}
	}

	if sec == rfb.SecurityVNCAuth {
		var challenge, resp [16]byte
		_, _ = rand.Read(challenge[:])
		if _, err := c.Write(challenge[:]); err != nil {
			return err
		}
		if _, err := io.ReadFull(br, resp[:]); err != nil {
			return fmt.Errorf("reading authentication response: %w", err)
		}
		want := rfb.VNCAuthResponse(s.Password, challenge)
		if subtle.ConstantTimeCompare(want[:], resp[:]) != 1 {
			s.securityFailure(c, minor, "authentication failed")
			return ErrAuthFailed
		}
	}
	if minor == 8 || sec == rfb.SecurityVNCAuth {
		if _, err := c.Write([]byte{0, 0, 0, 0}); err != nil { // SecurityResult OK
			return err
		}
	}

	if _, err := io.ReadFull(br, b[:1]); err != nil { // ClientInit; every session shares
		return fmt.Errorf("reading ClientInit: %w", err)
	}
	init := make([]byte, 0, 24+len(s.Name))
	init = binary.BigEndian.AppendUint16(init, uint16(s.Width))
	init = binary.BigEndian.AppendUint16(init, uint16(s.Height))
	pf := rfb.PixelFormat32.Marshal()
	init = append(init, pf[:]...)
	init = binary.BigEndian.AppendUint32(init, uint32(len(s.Name)))
	init = append(init, s.Name...)
	_, err = c.Write(init)
	return err
}

// securityFailure sends a failed SecurityResult, with its reason in 3.8.
func (s *Server) securityFailure(c net.Conn, minor int, reason string) {
	b := binary.BigEndian.AppendUint32(nil, 1)
	if minor == 8 {
		b = binary.BigEndian.AppendUint32(b, uint32(len(reason)))
		b = append(b, reason...)
	}
	_, _ = c.Write(b)
}

// session is one client after the handshake: its pixel format, what it
// asked for and what changed since it last got an update.
type session struct {
	canvas  *canvas
	buttons uint8 // last pointer button mask; only the reader uses it

	mu      sync.Mutex
	enc     *encoder
	dirty   region
	want    bool // an update request is pending
	wantIn  rect // its area
	wake    chan struct{}
	done    chan struct{}
	sendBuf []rect
}

// damage records that r changed. Called with the canvas locked.
func (ss *session) damage(r rect) {
	ss.mu.Lock()
	ss.dirty = ss.dirty.add(r)
	ss.mu.Unlock()
	ss.notify()
}

func (ss *session) notify() {
	select {
	case ss.wake <- struct{}{}:
	default:
	}
}

// apply acts on one client message.
func (ss *session) apply(m clientMessage) error {
	switch m.typ {
	case rfb.MsgSetPixelFormat:
		enc, err := newEncoder(m.pixelFormat)
		if err != nil {
			return err
		}
		ss.mu.Lock()
		ss.enc = enc
		ss.mu.Unlock()
	case rfb.MsgFramebufferUpdateRequest:
		r := xywh(m.x, m.y, m.w, m.h).intersect(ss.canvas.bounds())
		ss.mu.Lock()
		if !m.incremental {
			ss.dirty = ss.dirty.add(r)
		}
		ss.want, ss.wantIn = true, r
		ss.mu.Unlock()
		ss.notify()
	case rfb.MsgKeyEvent:
		if m.down {
			ss.canvas.key(m.keysym)
		}
	case rfb.MsgPointerEvent:
		if ss.buttons == 0 && m.buttons != 0 {
			ss.canvas.click(m.x, m.y)
		}
		ss.buttons = m.buttons
	}
	return nil
}

// nextUpdate returns the rectangles to send now and the encoder to send
// them with, or nothing when no request is pending or nothing changed in
// the requested area.
func (ss *session) nextUpdate() ([]rect, *encoder) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.want || len(ss.dirty) == 0 {
		return nil, nil
	}
	ss.dirty, ss.sendBuf = ss.dirty.take(ss.wantIn, ss.sendBuf[:0])
	if len(ss.sendBuf) == 0 {
		return nil, nil
	}
	ss.want = false
	return ss.sendBuf, ss.enc
}

// writeUpdates sends an update whenever one is requested and something in
// its area changed, until the session ends.
func (ss *session) writeUpdates(c net.Conn) error {
	var buf []byte
	for {
		select {
		case <-ss.done:
			return nil
		case <-ss.wake:
		}
		rects, enc := ss.nextUpdate()
		if len(rects) == 0 {
			continue
		}
		ss.canvas.mu.RLock()
		buf = ss.canvas.appendUpdate(buf[:0], enc, rects)
		ss.canvas.mu.RUnlock()
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := c.Write(buf); err != nil {
			c.Close()
			return err
		}
	}
}
