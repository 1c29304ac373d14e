//go:build unix

package console

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestPooledReadConn(t *testing.T) {
	client, server := tcpPair(t)
	c := pooledReads(server, &relayBuffers)
	if _, ok := c.(*pooledReadConn); !ok {
		t.Fatalf("pooledReads(%T) = %T, want a *pooledReadConn", server, c)
	}
	if bc := newBrowserConn(server); bc.sock != server {
		t.Fatal("a browserConn does not write to the socket under its pooledReadConn")
	}

	// Three relay buffers' worth, read back in odd sizes, as gorilla reads
	// frame headers and payloads.
	want := make([]byte, 3*relayBufferSize+17)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		client.Write(want)
		client.Close()
	}()
	var got []byte
	for i := 0; ; i++ {
		p := make([]byte, []int{1, 2, 14, 512, 70000}[i%5])
		n, err := c.Read(p)
		got = append(got, p[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(want))
	}
	pc := c.(*pooledReadConn)
	if pc.bp != nil || len(pc.buf) != 0 {
		t.Error("a drained pooledReadConn still holds a buffer")
	}
}

func TestPooledReadConnDeadline(t *testing.T) {
	_, server := tcpPair(t)
	c := pooledReads(server, &relayBuffers)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 10))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	if pc := c.(*pooledReadConn); pc.bp != nil {
		t.Error("a pooledReadConn waiting for bytes holds a buffer")
	}
}

func TestPooledReadsLeavesOtherConns(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if c := pooledReads(a, &relayBuffers); c != a {
		t.Fatalf("pooledReads(%T) = %T, want it unchanged", a, c)
	}
}
