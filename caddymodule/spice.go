package caddymodule

import (
	"errors"
	"net"
	"net/http"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/spice"
)

// serveSPICE serves one SPICE channel (protocol spice). spice-html5 opens
// a WebSocket per channel, all with the console's token; which SPICE
// session a channel is for is only in its link message, after the
// upgrade. So:
//
//   - A token with a live SPICE console (its main channel's MAIN_INIT
//     seen) is most likely one of its later channels: the request is
//     checked as far as the Origin, the token's presence and the client's
//     rate, and the console's target is dialed again, without a lookup (a
//     spent one_time token included). Any other request goes through the
//     whole pipeline, as a console of its own.
//   - After the upgrade the link message is read, within dial_timeout.
//     Anything but a SPICE link is closed 1008, and nothing of it reached
//     the target.
//   - A channel whose connection_id is a live console of the same token
//     joins it; another connection_id is closed 1008. A main channel of a
//     new session (connection_id 0) is a console of its own: when it came
//     without a lookup, it runs the pipeline now, and a refusal (the
//     per-token limit, a spent one_time token) is close 1008 with the
//     refusal's reason.
func (h *Handler) serveSPICE(w http.ResponseWriter, r *http.Request, req admission.Request) error {
	ctx := r.Context()
	hash := admission.TokenHash(req.Token)
	var (
		target net.Conn
		c      *admission.Console
	)
	if live := console.SPICEConsoleOfToken(hash); live != nil && req.Token != "" {
		conn, ref := h.pipeline.Join(ctx, req, live.Redial)
		if ref != nil {
			return h.refuse(w, r, ref)
		}
		target = conn
	} else {
		admitted, ref := h.pipeline.Admit(ctx, req)
		if ref != nil {
			return h.refuse(w, r, ref)
		}
		c, target = admitted, admitted.Conn
	}
	// abandon lets go of what the channel was admitted with.
	abandon := func() {
		target.Close()
		if c != nil {
			c.Release()
		}
	}

	ws, stream, ok := h.upgradeEither(w, r, req, target)
	if !ok {
		if c != nil {
			c.Release()
		}
		return nil
	}
	refuse := func(result, text string, err error) error {
		abandon()
		sessionsTotal.WithLabelValues(req.Server, result).Inc()
		h.logger.Info("SPICE channel refused",
			zap.String("client", req.Client),
			zap.String("token_hash", hash),
			zap.String("reason", text),
			zap.Error(err))
		console.Refuse(ws, websocket.ClosePolicyViolation, text)
		return nil
	}

	link, err := console.ReadSPICELink(ws, h.pipeline.DialTimeout())
	if err != nil {
		if !errors.Is(err, console.ErrNotSPICE) {
			// The browser left, or sent nothing in time.
			abandon()
			ws.NetConn().Close()
			sessionsTotal.WithLabelValues(req.Server, "client_gone").Inc()
			h.logger.Debug("no SPICE link from the browser", zap.String("client", req.Client), zap.Error(err))
			return nil
		}
		return refuse("bad_request", "not a SPICE client", err)
	}

	l := link.Link()
	ch := console.SPICEChannel{Link: link}
	switch {
	case l.Channel == spice.ChannelMain && l.ConnectionID != 0:
		// A migration target: spice-server would end the live session
		// and start none.
		return refuse("unknown_session", console.ReasonUnknownSPICESession, errors.New("a main channel with a session id"))
	case l.ConnectionID != 0:
		ch.Join = console.FindSPICEConsole(l.ConnectionID, hash)
		if ch.Join == nil {
			return refuse("unknown_session", console.ReasonUnknownSPICESession, nil)
		}
		if c != nil {
			// Admitted as a console of its own while its session's main
			// channel was still starting: it is that console's channel.
			c.Release()
			c = nil
		}
	case l.Channel != spice.ChannelMain:
		return refuse("unknown_session", console.ReasonUnknownSPICESession, errors.New("a channel other than main without a session id"))
	case c == nil:
		// A new session's main channel, though the token has a live
		// console: a console of its own, through the whole pipeline.
		target.Close()
		admitted, ref := h.pipeline.Admit(ctx, req)
		if ref != nil {
			console.Refuse(ws, websocket.ClosePolicyViolation, ref.Reason)
			return nil
		}
		c, target = admitted, admitted.Conn
	}
	var cfg console.Config
	if c != nil {
		ch.Redial = c.Redialer()
		cfg = h.sessionConfig(r, req, c)
	} else {
		cfg = h.sessionConfig(r, req, &admission.Console{Target: ch.Join.Target(), TokenHash: hash})
	}
	s := console.NewSPICE(ws, target, cfg, ch)
	var release func()
	if c != nil {
		release = c.Release
	}
	return h.run(s, req, stream, nil, release)
}
