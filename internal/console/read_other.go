//go:build !unix

package console

import (
	"net"
	"sync"
)

// pooledReader: without access to the socket, the pump holds its buffer
// while it waits.
func pooledReader(c net.Conn, buffers *sync.Pool) func() (*[]byte, int, error) {
	return heldBufferReader(c, buffers)
}

// waitsWithoutBuffer: pooledReader holds its buffer while it waits.
func waitsWithoutBuffer(net.Conn) bool { return false }

// pooledReads: without access to the socket, gorilla reads the connection
// itself.
func pooledReads(c net.Conn, _ *sync.Pool) net.Conn { return c }
