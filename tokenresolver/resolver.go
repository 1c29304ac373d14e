// Package tokenresolver maps console tokens to VNC servers. It holds the
// Resolver interface, the Target a token stands for, the errors resolvers
// report, the one parser for websockify-compatible target formats, and the
// resolvers themselves (token file, HTTP callback, Redis, JWT, and nova's
// console-auth API behind Keystone). It does not import Caddy; caddymodule
// wraps each resolver as a Caddy module.
package tokenresolver

import (
	"context"
	"errors"
	"time"
)

// Query is one lookup: the token and who is asking for it.
type Query struct {
	// Token is the secret from the browser's request. Never log it.
	Token string
	// ClientAddr is the browser's address (host:port) as the proxy sees it.
	ClientAddr string
	// Origin is the request's Origin header; empty when not from a browser.
	Origin string
}

// Resolver maps a token to the VNC server it opens.
//
// Resolve returns ErrNotFound (or an error wrapping it) for a token it does
// not know, ErrExpired for one past its lifetime, and ErrUnavailable (wrapped
// with the reason) when it cannot answer: a store down, a callback failing or
// timing out. Resolve must be safe for concurrent use and must return when ctx
// is done. Errors must not contain the token.
type Resolver interface {
	Resolve(ctx context.Context, q Query) (Target, error)
}

// Target is the VNC server a token stands for.
type Target struct {
	// Network is "tcp" or "unix".
	Network string `json:"network"`
	// Address is host:port for tcp (IPv6 hosts in brackets), a socket path
	// for unix.
	Address string `json:"address"`
	// Password is the VNC server's password when the token's record carries
	// one; empty otherwise. The proxy logs in with it; the browser never
	// sees it.
	Password string `json:"-"`
	// Username is the VNC server's username for VeNCrypt's Plain subtypes,
	// when the record carries one.
	Username string `json:"-"`
	// ViewOnly makes this console view-only at the proxy.
	ViewOnly bool `json:"view_only,omitempty"`
	// Clipboard narrows the console's clipboard policy: "both", "copy"
	// (server to browser only), "paste" (browser to server only) or
	// "none"; empty when the record says nothing.
	Clipboard string `json:"clipboard,omitempty"`
	// Record asks for this console to be recorded where recording is
	// opt_in.
	Record bool `json:"record,omitempty"`
	// ExpiresAt is when the token stops being valid; zero when the resolver
	// knows of no expiry.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// Expired reports whether the target's token is past its expiry at now.
func (t Target) Expired(now time.Time) bool {
	return !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)
}

// String returns network and address, for logs; it never includes the
// password or the username.
func (t Target) String() string {
	return t.Network + ":" + t.Address
}

// Errors a Resolver reports; test them with errors.Is.
var (
	// ErrNotFound: the token is unknown or was already used.
	ErrNotFound = errors.New("token not found")
	// ErrExpired: the token is known but past its expiry.
	ErrExpired = errors.New("token expired")
	// ErrUnavailable: the resolver could not answer (store down, timeout).
	ErrUnavailable = errors.New("token resolver unavailable")
)
