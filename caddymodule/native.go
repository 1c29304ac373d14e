package caddymodule

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbproxy"
)

func init() {
	caddy.RegisterModule(NativeApp{})
	httpcaddyfile.RegisterGlobalOption("vnc_proxy", parseNativeOption)
}

// nativePromptTimeout bounds the wait for a viewer's credentials, which a
// person may be typing into its password prompt; every other step of the
// handshake is a machine's and has dial_timeout.
const nativePromptTimeout = 60 * time.Second

// maxNativeHandshakes bounds the connections of one listener that are in
// their handshake (up to the SecurityResult) at once: beyond it a new
// connection is closed at once, so that a flood of stalled handshakes
// cannot grow without bound. Live consoles are bounded by max_sessions.
const maxNativeHandshakes = 256

// reasonListenerRemoved is why a native console ends when a reload
// removes its listener, as logged.
const reasonListenerRemoved = "native listener removed"

// NativeApp is the vnc_proxy app: TLS listeners for native VNC viewers
// (TigerVNC's vncviewer, Remmina, virt-viewer), which cannot speak
// WebSocket. A viewer connects with RFB 3.8 and VeNCrypt X509Plain: TLS
// with the certificate Caddy's tls app manages for the listener's
// server_name, then a username (ignored) and a password, which is the
// console token. The console then goes through the same admission
// pipeline as the vnc_proxy handler's (failed-token rate, limits, lookup,
// allow_targets, dial, the proxy's login to the VNC server) and the same
// relay; every refusal is a failed SecurityResult with the short reason a
// browser would get.
type NativeApp struct {
	// The listeners, each with its own addresses, certificate name and
	// console options.
	Listeners []*NativeListener `json:"listeners,omitempty"`
}

// NativeListener is one native listener of the vnc_proxy app.
type NativeListener struct {
	// The network addresses to listen on, in Caddy's form (e.g. ":5901",
	// "tcp/192.0.2.1:5901"). Required.
	Listen []string `json:"listen,omitempty"`

	// The name of the listener's certificate, which Caddy's tls app
	// obtains and renews (ACME for a public name; an internal issuer with
	// local_certs or a tls automation policy). It is served to every
	// viewer, whatever name it asks for (none, an IP address, an alias).
	// Viewers check it, so they connect by this name. Required.
	ServerName string `json:"server_name,omitempty"`

	// The console options, the same as the vnc_proxy handler's, with the
	// same syntax, defaults and meaning. Consoles are always RFB-aware:
	// the proxy logs in to the VNC server itself (security None included),
	// since the viewer authenticated to the proxy.
	ConsoleOptions

	server     string // names the listener in metrics, logs and the admin list
	pipeline   *admission.Pipeline
	tlsApp     *caddytls.TLS
	tlsConfig  *tls.Config
	sockets    []*nativeSocket
	handshakes chan struct{}
	logger     *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (NativeApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "vnc_proxy",
		New: func() caddy.Module { return new(NativeApp) },
	}
}

// Provision sets up every listener: its pipeline, its TLS configuration
// from the tls app, and its sockets (kept across reloads).
func (a *NativeApp) Provision(ctx caddy.Context) error {
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	seen := make(map[string]bool)
	for i, l := range a.Listeners {
		if err := l.provision(ctx); err != nil {
			return fmt.Errorf("native listener %d: %w", i, err)
		}
		for _, s := range l.sockets {
			if seen[s.key] {
				return fmt.Errorf("native listener %d: address %s is another listener's", i, s.key)
			}
			seen[s.key] = true
		}
	}
	return nil
}

func (l *NativeListener) provision(ctx caddy.Context) error {
	l.logger = ctx.Logger()
	if len(l.Listen) == 0 {
		return errors.New("listen: at least one address is required")
	}
	if l.ServerName == "" {
		return errors.New("server_name is required: the name of the listener's certificate")
	}
	addrs := make([]caddy.NetworkAddress, 0, len(l.Listen))
	for _, s := range l.Listen {
		na, err := caddy.ParseNetworkAddress(s)
		if err != nil {
			return fmt.Errorf("listen %q: %w", s, err)
		}
		if na.IsUnixNetwork() || na.Network == "udp" || na.Network == "udp4" || na.Network == "udp6" {
			return fmt.Errorf("listen %q: a native listener is TCP", s)
		}
		addrs = append(addrs, na)
	}
	// The listener is known by its first address: its console counts and
	// failed-token table go on across reloads that keep it there.
	l.server = "native/" + addrs[0].String()

	cfg, err := l.admissionConfig(ctx)
	if err != nil {
		return err
	}
	cfg.Protocol = admission.ProtocolVNC
	cfg.AlwaysLogin = true
	l.pipeline, err = admission.New(cfg, loadState(l.server))
	if err != nil {
		releaseState(l.server)
		return err
	}

	app, err := ctx.App("tls")
	if err != nil {
		return fmt.Errorf("loading the tls app: %w", err)
	}
	tlsApp, ok := app.(*caddytls.TLS)
	if !ok {
		return fmt.Errorf("the tls app is a %T", app)
	}
	l.tlsApp = tlsApp
	// The certificate of server_name for every viewer: one that sends no
	// SNI (DefaultSNI), or a name or an IP address with no certificate of
	// its own (FallbackSNI).
	policies := caddytls.ConnectionPolicies{{
		DefaultSNI:  l.ServerName,
		FallbackSNI: l.ServerName,
		// No ALPN at all (empty, not nil, or Caddy adds acme-tls/1):
		// viewers speak RFB inside TLS, and whatever protocols a client
		// offers are then ignored rather than refused.
		ALPN: []string{},
	}}
	if err := policies.Provision(ctx); err != nil {
		return fmt.Errorf("TLS connection policy: %w", err)
	}
	l.tlsConfig = policies.TLSConfig(ctx)
	l.handshakes = make(chan struct{}, maxNativeHandshakes)

	for _, na := range addrs {
		for offset := range na.PortRangeSize() {
			s, err := acquireSocket(ctx, na, offset)
			if err != nil {
				return err
			}
			l.sockets = append(l.sockets, s)
		}
	}
	return nil
}

// Start manages the listeners' certificates and hands their sockets'
// connections to this config's listeners.
func (a *NativeApp) Start() error {
	for _, l := range a.Listeners {
		// Asynchronous: the first handshakes may wait for the certificate.
		if err := l.tlsApp.Manage(map[string]struct{}{l.ServerName: {}}); err != nil {
			return fmt.Errorf("managing the certificate of %s: %w", l.ServerName, err)
		}
		for _, s := range l.sockets {
			s.use(l)
		}
		l.logger.Info("native VNC listener serving", zap.Strings("listen", l.Listen), zap.String("server_name", l.ServerName))
	}
	return nil
}

// Stop hands the sockets back to the config that took over, if any; the
// sockets themselves, and the consoles on them, live on while a config
// uses them (Cleanup).
func (a *NativeApp) Stop() error {
	for _, l := range a.Listeners {
		for _, s := range l.sockets {
			s.unuse(l)
		}
	}
	return nil
}

// Cleanup lets go of the listeners' sockets and states: a socket no config
// uses any more is closed, and its live consoles end.
func (a *NativeApp) Cleanup() error {
	for _, l := range a.Listeners {
		// What provision acquired: the state once the pipeline was made,
		// and each socket opened or shared.
		if l.pipeline != nil {
			releaseState(l.server)
		}
		l.releaseRecording()
		for _, s := range l.sockets {
			_, _ = nativeSockets.Delete(s.key)
		}
	}
	return nil
}

// serve runs one viewer's connection: the handshake up to its
// credentials, admission, the SecurityResult, and the console.
func (l *NativeListener) serve(conn net.Conn, sock *nativeSocket) {
	select {
	case l.handshakes <- struct{}{}:
	default:
		conn.Close()
		l.logger.Debug("native handshake refused: too many in progress", zap.String("client", conn.RemoteAddr().String()))
		return
	}
	handshaking := true
	done := func() {
		if handshaking {
			handshaking = false
			<-l.handshakes
		}
	}
	defer done()

	dialTimeout := l.pipeline.DialTimeout()
	client := conn.RemoteAddr().String()
	_ = conn.SetDeadline(time.Now().Add(dialTimeout))
	nc, err := rfbproxy.AcceptNative(conn, l.tlsConfig, nativePromptTimeout)
	if err != nil {
		conn.Close()
		sessionsTotal.WithLabelValues(l.server, "bad_request").Inc()
		l.logger.Debug("native handshake failed", zap.String("client", client), zap.Error(err))
		return
	}
	ip := client
	if host, _, err := net.SplitHostPort(client); err == nil {
		ip = host
	}
	req := admission.Request{Token: nc.Token, ClientIP: ip, Client: client, Server: l.server}
	c, ref := l.pipeline.Admit(sock.ctx, req)
	// The SecurityResult goes out within the dial timeout from here.
	_ = conn.SetDeadline(time.Now().Add(dialTimeout))
	if ref != nil {
		if ref.Status != 0 {
			_ = nc.Refuse(ref.Reason)
		}
		nc.TLS.Close()
		return
	}
	if err := nc.Admit(); err != nil {
		c.Abandon()
		conn.Close()
		sessionsTotal.WithLabelValues(l.server, "client_gone").Inc()
		l.logger.Debug("native viewer left before its console", zap.String("client", client), zap.Error(err))
		return
	}
	done()

	var s *console.Session
	s = console.NewNative(nc, c.Conn, console.Config{
		Logger:           l.logger,
		IdleTimeout:      time.Duration(l.IdleTimeout),
		MaxMessageSize:   defaultMaxMessageSize,
		HandshakeTimeout: dialTimeout,
		Metrics:          sessionMetrics(l.server),
		Target:           c.Target,
		ExpiresAt:        c.ExpiresAt,
		Client:           client,
		TokenHash:        c.TokenHash,
		Server:           l.server,
		Login:            c.Login,
		ViewOnly:         c.ViewOnly,
		Clipboard:        c.Clipboard,
		Record:           l.consoleRecord(c),
		EndAt:            c.EndAt,
		EndReason:        c.EndReason,
		Release: func() {
			c.Release()
			sock.forget(s)
		},
	})
	sock.track(s)
	if err := s.Start(nil); err != nil {
		sock.forget(s)
		c.Release()
		sessionsTotal.WithLabelValues(l.server, "client_gone").Inc()
		l.logger.Debug("session did not start", zap.String("session", s.ID()), zap.Error(err))
		return
	}
	sessionsTotal.WithLabelValues(l.server, "started").Inc()
}

// nativeSockets are the process's native listening sockets, by address.
// A socket outlives the config that opened it as long as a later config
// listens there too: a reload neither fails with "address in use" nor
// drops the connections queued in the socket, as closing it, or a second
// socket on the same port (SO_REUSEPORT splits the queue), would.
var nativeSockets = caddy.NewUsagePool()

// nativeSocket is one listening socket and its accept loop, which hands
// each connection to the newest started config's listener there.
type nativeSocket struct {
	key    string
	ln     net.Listener
	ctx    context.Context // ends when the socket closes: admissions under way stop
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	users    []*NativeListener // started configs' listeners, oldest first
	sessions map[*console.Session]struct{}
}

// acquireSocket returns the socket for na's address at offset, opened if
// no config has it, and counts one more user of it.
func acquireSocket(ctx caddy.Context, na caddy.NetworkAddress, offset uint) (*nativeSocket, error) {
	key := na.Network + "/" + na.JoinHostPort(offset)
	v, _, err := nativeSockets.LoadOrNew(key, func() (caddy.Destructor, error) {
		ln, err := na.Listen(ctx, offset, net.ListenConfig{})
		if err != nil {
			return nil, fmt.Errorf("listening on %s: %w", key, err)
		}
		nl, ok := ln.(net.Listener)
		if !ok {
			return nil, fmt.Errorf("listening on %s: not a stream listener", key)
		}
		s := &nativeSocket{key: key, ln: nl, done: make(chan struct{}), sessions: make(map[*console.Session]struct{})}
		// Not the config's context: the socket outlives it.
		s.ctx, s.cancel = context.WithCancel(context.Background())
		go s.accept()
		return s, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*nativeSocket), nil
}

// accept hands connections to the current listener until the socket
// closes. A connection that arrives while no config serves it (between a
// failed start and its cleanup) is closed.
func (s *nativeSocket) accept() {
	defer close(s.done)
	var backoff time.Duration
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Out of file descriptors, say: wait a little, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.mu.Lock()
		var l *NativeListener
		if n := len(s.users); n > 0 {
			l = s.users[n-1]
		}
		s.mu.Unlock()
		if l == nil {
			conn.Close()
			continue
		}
		go l.serve(conn, s)
	}
}

func (s *nativeSocket) use(l *NativeListener) {
	s.mu.Lock()
	s.users = append(s.users, l)
	s.mu.Unlock()
}

func (s *nativeSocket) unuse(l *NativeListener) {
	s.mu.Lock()
	for i, u := range s.users {
		if u == l {
			s.users = append(s.users[:i], s.users[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
}

func (s *nativeSocket) track(c *console.Session) {
	s.mu.Lock()
	s.sessions[c] = struct{}{}
	s.mu.Unlock()
}

func (s *nativeSocket) forget(c *console.Session) {
	s.mu.Lock()
	delete(s.sessions, c)
	s.mu.Unlock()
}

func (s *nativeSocket) owns(c *console.Session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sessions[c]
	return ok
}

// Destruct runs when no config uses the socket any more: it closes the
// socket, stops the admissions under way and ends the socket's consoles,
// since no config serves that address now.
func (s *nativeSocket) Destruct() error {
	err := s.ln.Close()
	s.cancel()
	<-s.done
	console.Sessions.EndMatching(s.owns, reasonListenerRemoved)
	return err
}

// parseNativeOption reads the global option
//
//	vnc_proxy {
//		listen <network-address>...
//		server_name <name>
//		<console options of the vnc_proxy handler>
//	}
//
// once per listener: a second vnc_proxy option adds a listener to the
// app the first one made.
func parseNativeOption(d *caddyfile.Dispenser, existing any) (any, error) {
	app := new(NativeApp)
	if existing != nil {
		prev, ok := existing.(httpcaddyfile.App)
		if !ok {
			return nil, fmt.Errorf("vnc_proxy: unexpected earlier value %T", existing)
		}
		if err := json.Unmarshal(prev.Value, app); err != nil {
			return nil, fmt.Errorf("vnc_proxy: reading the earlier listeners: %w", err)
		}
	}
	l := new(NativeListener)
	if err := l.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	app.Listeners = append(app.Listeners, l)
	return httpcaddyfile.App{Name: "vnc_proxy", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile reads one listener's block.
func (l *NativeListener) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	err := l.unmarshalBlock(d, "vnc_proxy listener", func(opt string) (bool, error) {
		switch opt {
		case "listen":
			l.Listen = d.RemainingArgs()
			if len(l.Listen) == 0 {
				return true, d.ArgErr()
			}
			for _, a := range l.Listen {
				if _, err := caddy.ParseNetworkAddress(a); err != nil {
					return true, d.Errf("listen %q: %v", a, err)
				}
			}
		case "server_name":
			if !d.AllArgs(&l.ServerName) {
				return true, d.ArgErr()
			}
		default:
			return false, nil
		}
		return true, nil
	})
	switch {
	case err != nil:
		return err
	case len(l.Listen) == 0:
		return d.Err("the vnc_proxy listener needs listen <address>...")
	case l.ServerName == "":
		return d.Err("the vnc_proxy listener needs server_name <name>: its certificate's name")
	case l.ResolverRaw == nil:
		return d.Err("the vnc_proxy listener needs a resolver (resolver file|http|redis|jwt|nova ...)")
	}
	return nil
}

// Interface guards
var (
	_ caddy.App          = (*NativeApp)(nil)
	_ caddy.Provisioner  = (*NativeApp)(nil)
	_ caddy.CleanerUpper = (*NativeApp)(nil)
	_ caddy.Destructor   = (*nativeSocket)(nil)
)
