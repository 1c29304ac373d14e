package testenv

import (
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Redis is a redis-server started by a test on a free loopback port, with no
// persistence. It can be stopped and started again on the same port, to test
// what clients do during and after an outage.
type Redis struct {
	// Addr is host:port; it stays the same across Restart.
	Addr string

	t    testing.TB
	bin  string
	port int

	mu   sync.Mutex
	proc *Process
}

// StartRedis starts redis-server (skipping the test, or failing it in CI,
// when it is not installed) and waits until it accepts connections.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := &Redis{t: t, bin: Require(t, "redis-server", "redis-server"), port: FreePort(t)}
	r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
	r.start()
	return r
}

func (r *Redis) start() {
	r.t.Helper()
	p := Start(r.t, r.bin,
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no",
		"--loglevel", "warning")
	if err := WaitDial("tcp", r.Addr, 10*time.Second); err != nil {
		p.Stop()
		r.t.Fatalf("redis-server did not start: %v\n%s", err, p.Output())
	}
	r.mu.Lock()
	r.proc = p
	r.mu.Unlock()
}

// Stop ends the server; its data is gone (there is no persistence).
func (r *Redis) Stop() {
	r.mu.Lock()
	p := r.proc
	r.proc = nil
	r.mu.Unlock()
	if p != nil {
		// A paused server must go on to take its SIGTERM.
		_ = p.Cmd.Process.Signal(syscall.SIGCONT)
		p.Stop()
	}
}

// Restart stops the server if it runs and starts a fresh, empty one on the
// same port.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Stop()
	r.start()
}

// Pause stops the server's process (SIGSTOP): it holds its connections
// and answers nothing until Resume, as a Redis stalled by the kernel, a
// fork or a long command would.
func (r *Redis) Pause() { r.signal(syscall.SIGSTOP) }

// Resume lets a paused server go on (SIGCONT).
func (r *Redis) Resume() { r.signal(syscall.SIGCONT) }

func (r *Redis) signal(sig syscall.Signal) {
	r.mu.Lock()
	p := r.proc
	r.mu.Unlock()
	if p != nil {
		_ = p.Cmd.Process.Signal(sig)
	}
}
