package admission

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

// mapResolver resolves tokens from a map.
type mapResolver map[string]tokenresolver.Target

func (m mapResolver) Resolve(_ context.Context, q tokenresolver.Query) (tokenresolver.Target, error) {
	if t, ok := m[q.Token]; ok {
		return t, nil
	}
	return tokenresolver.Target{}, tokenresolver.ErrNotFound
}

// silentTarget accepts connections and never writes, as a serial console
// with a quiet guest does; it returns its address and how many
// connections it has accepted.
func silentTarget(t *testing.T) (string, func() int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(conns)
	}
}

// results counts a pipeline's refusals by result.
type results struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *results) metrics() Metrics {
	return Metrics{Result: func(_, result string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.n[result]++
	}}
}

func (r *results) count(result string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[result]
}

// TestSerialConsoleInUse: a serial target with a console, live or being
// opened, is refused 409 to a second console, from any pipeline of the
// process and before it is dialed; the refusal is counted console_in_use;
// the target is free again once the console is released or abandoned.
func TestSerialConsoleInUse(t *testing.T) {
	addr, accepted := silentTarget(t)
	target := tokenresolver.Target{Network: "tcp", Address: addr}
	res := &results{n: map[string]int{}}
	newPipeline := func(p Protocol) *Pipeline {
		pl, err := New(Config{
			Resolver:    mapResolver{"a": target, "b": target},
			Protocol:    p,
			DialTimeout: 2 * time.Second,
			Metrics:     res.metrics(),
		}, NewState())
		if err != nil {
			t.Fatal(err)
		}
		return pl
	}
	// Two handlers (each with its own state), one target.
	first, second := newPipeline(ProtocolSerial), newPipeline(ProtocolSerial)
	req := func(token string) Request {
		return Request{Token: token, ClientIP: "192.0.2.1", Client: "192.0.2.1:4000"}
	}

	// The target greets with nothing: a serial console is admitted without
	// waiting for its first bytes (a wait would end in a 502 at the dial
	// timeout).
	c, ref := first.Admit(context.Background(), req("a"))
	if ref != nil {
		t.Fatalf("first console refused: %v", ref)
	}
	// The target's listener counts the accept on its own goroutine.
	deadline := time.Now().Add(10 * time.Second)
	for accepted() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.Greeting != nil {
		t.Errorf("greeting %q read from a serial console", c.Greeting)
	}

	for _, p := range []*Pipeline{first, second} {
		for _, token := range []string{"a", "b"} {
			_, ref := p.Admit(context.Background(), req(token))
			if ref == nil || ref.Status != http.StatusConflict || ref.Reason != "console in use" || ref.Result != "console_in_use" {
				t.Fatalf("second console: refusal %+v, want 409 console in use", ref)
			}
			if strings.Contains(ref.Reason, addr) {
				t.Errorf("reason %q names the target", ref.Reason)
			}
		}
	}
	if got := res.count("console_in_use"); got != 4 {
		t.Errorf("console_in_use counted %d times, want 4", got)
	}
	if n := accepted(); n != 1 {
		t.Errorf("the target was dialed %d times, want once: a refused console must not connect", n)
	}
	if n := first.state.Consoles() + second.state.Consoles(); n != 1 {
		t.Errorf("%d consoles counted, want 1: a refused console must give back its count", n)
	}

	// A VNC or raw console to the same address is not a serial console.
	raw := newPipeline(ProtocolRaw)
	rc, ref := raw.Admit(context.Background(), req("a"))
	if ref != nil {
		t.Fatalf("raw console refused: %v", ref)
	}
	rc.Abandon()

	c.Release()
	c2, ref := second.Admit(context.Background(), req("b"))
	if ref != nil {
		t.Fatalf("console after the first was released: refused %v", ref)
	}
	c2.Abandon()
	c3, ref := first.Admit(context.Background(), req("a"))
	if ref != nil {
		t.Fatalf("console after the second was abandoned: refused %v", ref)
	}
	c3.Release()
}

// TestSerialConsoleDialFailureFreesTarget: a serial console that cannot
// be dialed gives its target back.
func TestSerialConsoleDialFailureFreesTarget(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: the dial is refused
	target := tokenresolver.Target{Network: "tcp", Address: addr}
	p, err := New(Config{Resolver: mapResolver{"a": target}, Protocol: ProtocolSerial, DialTimeout: time.Second}, NewState())
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_, ref := p.Admit(context.Background(), Request{Token: "a"})
		if ref == nil || ref.Status != http.StatusBadGateway {
			t.Fatalf("refusal %+v, want 502", ref)
		}
	}
	release, err := serialConsoles.reserve(target)
	if err != nil {
		t.Fatalf("the target is still reserved after failed dials: %v", err)
	}
	release()
}

// TestProtocolOptions: options that need RFB are refused with the other
// protocols; an unknown protocol is refused; "" is vnc.
func TestProtocolOptions(t *testing.T) {
	r := mapResolver{}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Resolver: r, Protocol: ProtocolSerial, ViewOnly: true}, "view_only needs protocol vnc, not serial"},
		{Config{Resolver: r, Protocol: ProtocolRaw, VNCAuth: true}, "vnc_auth needs protocol vnc, not raw"},
		{Config{Resolver: r, Protocol: "rdp"}, `protocol "rdp"`},
		{Config{Resolver: r, ViewOnly: true, VNCAuth: true}, ""},
		{Config{Resolver: r, Protocol: ProtocolSPICE}, ""},
	} {
		p, err := New(c.cfg, NewState())
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.cfg.Protocol, err)
		case c.want == "" && p.cfg.Protocol == "":
			t.Errorf("protocol %q left empty", c.cfg.Protocol)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q: error %v, want %q", c.cfg.Protocol, err, c.want)
		}
	}
}

// TestViewOnlyTokenRefusedWithoutRFB: a token whose record makes its
// console view-only, or narrows its clipboard, is refused by a pipeline
// that cannot enforce it, before the target is dialed; a record that
// grants the whole clipboard is not.
func TestViewOnlyTokenRefusedWithoutRFB(t *testing.T) {
	addr, accepted := silentTarget(t)
	for _, c := range []struct {
		target tokenresolver.Target
		result string
	}{
		{tokenresolver.Target{Network: "tcp", Address: addr, ViewOnly: true}, "view_only_unsupported"},
		{tokenresolver.Target{Network: "tcp", Address: addr, Clipboard: "copy"}, "clipboard_unsupported"},
	} {
		for _, proto := range []Protocol{ProtocolSerial, ProtocolRaw} {
			p, err := New(Config{Resolver: mapResolver{"a": c.target}, Protocol: proto}, NewState())
			if err != nil {
				t.Fatal(err)
			}
			_, ref := p.Admit(context.Background(), Request{Token: "a"})
			if ref == nil || ref.Status != http.StatusForbidden || ref.Result != c.result {
				t.Fatalf("%s: refusal %+v, want 403 %s", proto, ref, c.result)
			}
		}
	}
	if n := accepted(); n != 0 {
		t.Errorf("the target was dialed %d times", n)
	}
	p, err := New(Config{Resolver: mapResolver{"a": {Network: "tcp", Address: addr, Clipboard: "both"}}, Protocol: ProtocolRaw}, NewState())
	if err != nil {
		t.Fatal(err)
	}
	if con, ref := p.Admit(context.Background(), Request{Token: "a"}); ref != nil {
		t.Fatalf("a record granting the whole clipboard was refused: %+v", ref)
	} else {
		con.Release()
		con.Conn.Close()
	}
}
