package console

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/internal/nativeclient"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbproxy"
	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
	"github.com/vncgate/caddy-vnc-proxy/internal/vncdemo"
)

// nativeDoor is a native listener without Caddy: AcceptNative, a login to
// the demo VNC server, Admit, and a native session.
func nativeDoor(t *testing.T, viewOnly bool) (addr string, roots *x509.CertPool) {
	t.Helper()
	pki := testenv.NewPKI(t)
	pair, err := tls.LoadX509KeyPair(pki.ServerCert, pki.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)

	demoL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	demo := &vncdemo.Server{}
	go func() { _ = demo.Serve(demoL) }()
	t.Cleanup(func() { demo.Close() })

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				nc, err := rfbproxy.AcceptNative(c, cfg, 0)
				if err != nil {
					c.Close()
					return
				}
				target, err := net.Dial("tcp", demoL.Addr().String())
				if err != nil {
					c.Close()
					return
				}
				greeting := make([]byte, rfb.VersionLen)
				_, _ = io.ReadFull(target, greeting)
				target, res, err := rfb.Login(target, greeting, rfb.Credentials{})
				if err != nil || nc.Token != "tok" {
					_ = nc.Refuse("invalid or expired token")
					c.Close()
					target.Close()
					return
				}
				_ = nc.Admit()
				s := NewNative(nc, target, Config{
					Logger: zap.NewNop(), MaxMessageSize: 1 << 20, HandshakeTimeout: 5 * time.Second,
					Metrics: &Metrics{
						BytesToBrowser: prometheus.NewCounter(prometheus.CounterOpts{Name: "b"}),
						BytesToTarget:  prometheus.NewCounter(prometheus.CounterOpts{Name: "t"}),
						Active:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "a"}),
						Duration:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "d"}),
					},
					Target: "tcp:" + demoL.Addr().String(), Login: &res, ViewOnly: viewOnly,
				})
				if err := s.Start(nil); err != nil {
					t.Error(err)
				}
			}()
		}
	}()
	return l.Addr().String(), roots
}

// TestNativeSession runs a native viewer's console through the engine: the
// VNC server's ServerInit and updates reach the viewer unframed, its
// input reaches the server (or, view-only, is dropped), the admin list
// says "native", and ending the console closes the viewer's connection.
func TestNativeSession(t *testing.T) {
	for _, viewOnly := range []bool{false, true} {
		name := "full"
		if viewOnly {
			name = "view-only"
		}
		t.Run(name, func(t *testing.T) {
			addr, roots := nativeDoor(t, viewOnly)
			c, err := nativeclient.Dial(addr, nativeclient.Options{Token: "tok", ServerName: "localhost", RootCAs: roots})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.ServerInit.Width == 0 || c.ServerInit.Height == 0 {
				t.Fatalf("ServerInit %+v", c.ServerInit)
			}
			// Input, then a request: the update answers the request after
			// the input was relayed (or dropped).
			if err := rfb.KeyEvent(c, true, 'a'); err != nil {
				t.Fatal(err)
			}
			if err := rfb.RequestUpdate(c, false, 0, 0, 16, 16); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var msgType [1]byte
			if _, err := io.ReadFull(c, msgType[:]); err != nil || msgType[0] != 0 {
				t.Fatalf("first message %v, %v; want a FramebufferUpdate", msgType[0], err)
			}

			// ClientInit, the key event unless dropped, the request. The
			// VNC server can answer the request before the relay has
			// counted it.
			want := int64(1 + 8 + 10)
			if viewOnly {
				want = 1 + 10
			}
			var info Info
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				for _, i := range Sessions.List() {
					if i.Target != "" && i.Transport == "native" {
						info = i
					}
				}
				if info.BytesToTarget == want || time.Now().After(deadline) {
					break
				}
			}
			if info.ID == "" {
				t.Fatalf("no native console listed: %+v", Sessions.List())
			}
			if info.BytesToTarget != want || info.ViewOnly != viewOnly {
				t.Errorf("listed %+v; want %d bytes to the VNC server, view_only %v", info, want, viewOnly)
			}

			if n := Sessions.EndMatching(func(s *Session) bool { return s.ID() == info.ID }, ReasonByAdmin); n != 1 {
				t.Fatalf("ended %d consoles", n)
			}
			start := time.Now()
			_, err = io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the viewer's connection stayed open after the console ended")
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("the connection closed %v after the end", took)
			}
			waitUnlisted(t, info.ID)
		})
	}
}

// waitUnlisted waits until the session with id has ended.
func waitUnlisted(t *testing.T, id string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); Sessions.Find(id) != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("session %s still listed 5s after its end", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
