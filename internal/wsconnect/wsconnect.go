// Package wsconnect opens WebSockets the way browsers do over HTTP/2 (RFC
// 8441) and HTTP/3 (RFC 9220): an extended CONNECT with :protocol
// websocket, whose stream then carries the frames. It returns gorilla's
// client connection over that stream, so that tests and benchmarks speak
// to the proxy over every transport through one WebSocket API.
package wsconnect

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"
)

// ErrRefused: the server answered the CONNECT with a status other than
// 200; the response comes with it.
var ErrRefused = errors.New("extended CONNECT refused")

// ErrNotOffered: the server's SETTINGS do not enable extended CONNECT.
var ErrNotOffered = errors.New("server does not offer extended CONNECT")

// H2 opens WebSockets over one HTTP/2 connection per host.
type H2 struct {
	Transport *http2.Transport
}

// NewH2 returns an HTTP/2 client with tlsConf.
func NewH2(tlsConf *tls.Config) *H2 {
	return &H2{Transport: &http2.Transport{TLSClientConfig: tlsConf}}
}

// Dial opens a WebSocket over HTTP/2 at rawURL (https://…). header adds to
// the request (Origin, Sec-WebSocket-Protocol). ctx bounds the opening; the
// stream lives until the connection is closed.
func (d *H2) Dial(ctx context.Context, rawURL string, header http.Header) (*websocket.Conn, *http.Response, error) {
	pr, pw := io.Pipe()
	streamCtx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(streamCtx, http.MethodConnect, rawURL, pr)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	req.Header = connectHeader(header)
	req.Header.Set(":protocol", "websocket")
	stop := context.AfterFunc(ctx, cancel)
	resp, err := d.Transport.RoundTrip(req)
	stop()
	if err != nil {
		cancel()
		pw.Close()
		if strings.Contains(err.Error(), "extended connect") {
			return nil, nil, fmt.Errorf("%w: %v", ErrNotOffered, err)
		}
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		pw.Close()
		return nil, resp, fmt.Errorf("%w: %s", ErrRefused, resp.Status)
	}
	c := &streamConn{r: resp.Body, w: pw, closeFn: func() error {
		pw.Close()
		err := resp.Body.Close()
		cancel()
		return err
	}}
	return handshake(ctx, c, resp)
}

// H3 opens WebSockets over one QUIC connection.
type H3 struct {
	conn *quic.Conn
	cc   *http3.ClientConn
}

// DialH3 connects to addr (host:port) over QUIC and waits for the server's
// SETTINGS: ErrNotOffered if they do not enable extended CONNECT.
func DialH3(ctx context.Context, addr string, tlsConf *tls.Config) (*H3, error) {
	tlsConf = tlsConf.Clone()
	tlsConf.NextProtos = []string{http3.NextProtoH3}
	conn, err := quic.DialAddr(ctx, addr, tlsConf, &quic.Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: 10 * time.Second})
	if err != nil {
		return nil, err
	}
	cc := (&http3.Transport{}).NewClientConn(conn)
	select {
	case <-cc.ReceivedSettings():
	case <-ctx.Done():
		conn.CloseWithError(0, "")
		return nil, ctx.Err()
	}
	if !cc.Settings().EnableExtendedConnect {
		conn.CloseWithError(0, "")
		return nil, ErrNotOffered
	}
	return &H3{conn: conn, cc: cc}, nil
}

// Close closes the QUIC connection and with it every WebSocket on it.
func (d *H3) Close() error { return d.conn.CloseWithError(0, "") }

// Dial opens a WebSocket over HTTP/3 at rawURL (https://…).
func (d *H3) Dial(ctx context.Context, rawURL string, header http.Header) (*websocket.Conn, *http.Response, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, err
	}
	str, err := d.cc.OpenRequestStream(ctx)
	if err != nil {
		return nil, nil, err
	}
	req := &http.Request{
		Method: http.MethodConnect,
		Proto:  "websocket",
		URL:    u,
		Host:   u.Host,
		Header: connectHeader(header),
	}
	req = req.WithContext(ctx)
	if err := str.SendRequestHeader(req); err != nil {
		str.CancelWrite(0)
		return nil, nil, err
	}
	resp, err := str.ReadResponse()
	if err != nil {
		str.CancelWrite(0)
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		// The caller reads the body, which ends the stream.
		str.Close()
		return nil, resp, fmt.Errorf("%w: %s", ErrRefused, resp.Status)
	}
	c := &streamConn{r: str, w: str, closeFn: func() error {
		str.CancelRead(0)
		return str.Close()
	}, deadlines: str}
	return handshake(ctx, c, resp)
}

func connectHeader(extra http.Header) http.Header {
	h := extra.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Sec-WebSocket-Version", "13")
	return h
}

// handshake gives gorilla's client the stream as its connection: gorilla
// writes an HTTP/1.1 upgrade request, which is dropped, and reads the 101
// it expects, made here, the server having answered 200 already.
func handshake(ctx context.Context, c *streamConn, resp *http.Response) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{
		NetDialContext:   func(context.Context, string, string) (net.Conn, error) { return c, nil },
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   64 << 10,
		WriteBufferSize:  64 << 10,
	}
	if p := resp.Header.Get("Sec-WebSocket-Protocol"); p != "" {
		d.Subprotocols = []string{p}
	}
	c.handshaking = true
	ws, _, err := d.DialContext(ctx, "ws://stream/", nil)
	if err != nil {
		c.Close()
		return nil, resp, err
	}
	return ws, resp, nil
}

// streamConn is a request stream as a net.Conn for gorilla's client.
type streamConn struct {
	r         io.Reader
	w         io.Writer
	closeFn   func() error
	deadlines interface {
		SetReadDeadline(time.Time) error
		SetWriteDeadline(time.Time) error
	}

	mu          sync.Mutex
	handshaking bool
	answer      *bytes.Reader
	closeOnce   sync.Once
}

func (c *streamConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.answer != nil && c.answer.Len() > 0 {
		defer c.mu.Unlock()
		return c.answer.Read(p)
	}
	c.mu.Unlock()
	return c.r.Read(p)
}

func (c *streamConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.handshaking {
		defer c.mu.Unlock()
		c.handshaking = false
		answer, err := switchingProtocols(p)
		if err != nil {
			return 0, err
		}
		c.answer = bytes.NewReader(answer)
		return len(p), nil
	}
	c.mu.Unlock()
	return c.w.Write(p)
}

// switchingProtocols is the 101 answer to gorilla's upgrade request.
func switchingProtocols(request []byte) ([]byte, error) {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(request)))
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	var b strings.Builder
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
	b.WriteString("Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n")
	if p := req.Header.Get("Sec-WebSocket-Protocol"); p != "" {
		b.WriteString("Sec-WebSocket-Protocol: " + p + "\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String()), nil
}

func (c *streamConn) Close() error {
	err := error(nil)
	c.closeOnce.Do(func() { err = c.closeFn() })
	return err
}

func (c *streamConn) LocalAddr() net.Addr  { return addr("stream") }
func (c *streamConn) RemoteAddr() net.Addr { return addr("stream") }

func (c *streamConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *streamConn) SetReadDeadline(t time.Time) error {
	if c.deadlines == nil {
		return nil
	}
	return c.deadlines.SetReadDeadline(t)
}

func (c *streamConn) SetWriteDeadline(t time.Time) error {
	if c.deadlines == nil {
		return nil
	}
	return c.deadlines.SetWriteDeadline(t)
}

type addr string

func (a addr) Network() string { return "stream" }
func (a addr) String() string  { return string(a) }
