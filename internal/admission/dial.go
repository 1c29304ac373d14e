package admission

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

// dial connects to the target and, for protocol vnc, reads and checks
// the VNC server's greeting; an RFB-aware console then logs
// in (login is its result). One deadline, the dial timeout from now,
// bounds all of it, and the wait ends when ctx does. It returns the
// greeting of a transparent console, for the client to get first.
func (p *Pipeline) dial(ctx context.Context, t tokenresolver.Target, aware bool) (net.Conn, []byte, *rfb.Result, error) {
	deadline := time.Now().Add(p.cfg.DialTimeout)
	dialer := p.dialer
	dialer.Deadline = deadline
	dialCtx, err := p.targets.checkTarget(ctx, t)
	if err != nil {
		return nil, nil, nil, err
	}
	raw, err := dialer.DialContext(dialCtx, t.Network, t.Address)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dialing target: %w", err)
	}
	if !p.cfg.Protocol.speaksRFB() {
		return raw, nil, nil, nil
	}
	_ = raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Now()) })
	conn, greeting, login, err := p.greet(raw, t, aware)
	if !stop() && err == nil {
		err = fmt.Errorf("waiting for the VNC server: %w", ctx.Err())
	}
	if err != nil {
		raw.Close()
		return nil, nil, nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	return conn, greeting, login, nil
}

// greet reads and checks the VNC server's greeting and, for an RFB-aware
// console, logs in; conn is what the console goes on with (TLS over raw
// after VeNCrypt X.509).
func (p *Pipeline) greet(raw net.Conn, t tokenresolver.Target, aware bool) (conn net.Conn, greeting []byte, login *rfb.Result, err error) {
	greeting = make([]byte, rfb.VersionLen)
	if _, err := io.ReadFull(raw, greeting); err != nil {
		return nil, nil, nil, fmt.Errorf("reading RFB greeting: %w", err)
	}
	if _, _, err := rfb.ParseVersion(greeting); err != nil {
		return nil, nil, nil, fmt.Errorf("target does not speak RFB: %w", err)
	}
	if !aware {
		return raw, greeting, nil, nil
	}
	conn, res, err := rfb.Login(raw, greeting, p.credentialsFor(t))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("logging in to the VNC server: %w", err)
	}
	return conn, nil, &res, nil
}
