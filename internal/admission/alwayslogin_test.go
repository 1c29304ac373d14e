package admission

import (
	"context"
	"net"
	"testing"

	"github.com/vncgate/caddy-vnc-proxy/internal/vncdemo"
	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

// oneToken resolves one token to one target.
type oneToken struct {
	token  string
	target tokenresolver.Target
}

func (r oneToken) Resolve(_ context.Context, q tokenresolver.Query) (tokenresolver.Target, error) {
	if q.Token != r.token {
		return tokenresolver.Target{}, tokenresolver.ErrNotFound
	}
	return r.target, nil
}

// TestAlwaysLogin: a door whose clients never see the VNC server's
// security (a native viewer) gets every console RFB-aware, the proxy
// logged in to a security-None server; without AlwaysLogin the same
// console is transparent (the greeting is the client's to answer).
func TestAlwaysLogin(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &vncdemo.Server{}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	resolver := oneToken{"tok", tokenresolver.Target{Network: "tcp", Address: l.Addr().String()}}

	for _, always := range []bool{false, true} {
		p, err := New(Config{Resolver: resolver, AlwaysLogin: always}, NewState())
		if err != nil {
			t.Fatal(err)
		}
		c, ref := p.Admit(context.Background(), Request{Token: "tok", ClientIP: "127.0.0.1", Client: "127.0.0.1:1"})
		if ref != nil {
			t.Fatalf("AlwaysLogin %v: refused: %v", always, ref)
		}
		if always && (c.Login == nil || c.Greeting != nil) {
			t.Errorf("AlwaysLogin: login %v, greeting %q; want a login and no greeting", c.Login, c.Greeting)
		}
		if !always && (c.Login != nil || len(c.Greeting) == 0) {
			t.Errorf("without AlwaysLogin: login %v, greeting %q; want the greeting and no login", c.Login, c.Greeting)
		}
		c.Abandon()
	}

	if _, err := New(Config{Resolver: resolver, AlwaysLogin: true, Protocol: ProtocolSerial}, NewState()); err == nil {
		t.Error("AlwaysLogin for serial consoles was accepted")
	}
}
