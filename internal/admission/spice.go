package admission

import (
	"context"
	"errors"
	"net"
	"net/http"
)

// A SPICE console is several connections to its target, one per SPICE
// channel (main, display, inputs, cursor, ...), each from its own
// WebSocket with the same token. The main channel is admitted as any
// console (Admit: limits, lookup, a one_time token spent); the later
// channels of its session join it (Join): they are checked as far as
// the token's presence and the client's rate, and dial the target the
// main channel's lookup gave, without a lookup of their own. Which session
// a channel belongs to is only known once its link message is read, after
// the upgrade; the door decides there (internal/console).

// Redialer connects to an admitted SPICE console's target again.
type Redialer func(ctx context.Context) (net.Conn, error)

// Redialer returns how to connect to the console's target again, for the
// later channels of a SPICE console; nil for other protocols.
func (c *Console) Redialer() Redialer { return c.redial }

// Join admits a later channel of a live SPICE console whose main channel
// this token opened: the Origin, the token's presence and the client's
// failed-token rate are checked, then redial connects to the console's
// target. It counts nothing against the limits: the console has its
// place already.
func (p *Pipeline) Join(ctx context.Context, req Request, redial Redialer) (net.Conn, *Refusal) {
	ref := p.check(req)
	if ref == nil {
		conn, err := redial(ctx)
		if err == nil {
			return conn, nil
		}
		ref = &Refusal{Status: http.StatusBadGateway, Reason: "VNC server unavailable", Result: "target_unavailable", Err: err}
		switch {
		case errors.Is(err, errTargetNotAllowed):
			ref.Status, ref.Reason, ref.Result = http.StatusForbidden, "target not allowed", "target_refused"
		case ctx.Err() != nil:
			ref = clientGone(err)
		}
	}
	p.Refused(req, ref, tokenFields(req.Token)...)
	return nil, ref
}
