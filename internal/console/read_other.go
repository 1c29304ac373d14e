//go:build !unix

package console

import "net"

// pooledReader: without access to the socket, the pump holds its buffer
// while it waits.
func pooledReader(c net.Conn) func() (*[]byte, int, error) {
	return heldBufferReader(c)
}

// pooledReads: without access to the socket, gorilla reads the connection
// itself.
func pooledReads(c net.Conn) net.Conn { return c }
