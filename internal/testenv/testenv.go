// Package testenv starts the real components tests run against (Redis,
// TigerVNC's Xvnc, QEMU, websockify) on free loopback ports and stops them when
// the test ends.
//
// A test that needs a program which is not installed skips with a message
// naming the Debian package, except when CI=true: there a missing program is a
// failure, so a green run means the test ran.
package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// InCI reports whether the tests run in CI (CI=true), where nothing may skip
// for a missing program.
func InCI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// Require returns the path of program, or skips the test (fails it in CI)
// naming the Debian package that provides it.
func Require(t testing.TB, program, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found: install the Debian package %s (make test-deps does)", program, debianPackage)
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitDial waits until something accepts connections on network/address.
func WaitDial(network, address string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout(network, address, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing accepts on %s %s after %v: %w", network, address, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Process is a program started by a test.
type Process struct {
	Cmd    *exec.Cmd
	output *syncBuffer
	done   chan struct{}
	err    error
}

// Start runs a program until the test ends (or Stop), keeping its output for
// the test log on failure.
func Start(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	return StartEnv(t, nil, name, args...)
}

// StartEnv is Start with the environment env (nil: the test's own).
func StartEnv(t testing.TB, env []string, name string, args ...string) *Process {
	t.Helper()
	p := &Process{Cmd: exec.Command(name, args...), output: &syncBuffer{}, done: make(chan struct{})}
	p.Cmd.Env = env
	p.Cmd.Stdout = p.output
	p.Cmd.Stderr = p.output
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.Output())
		}
	})
	return p
}

// Stop ends the process with SIGTERM (SIGKILL after 5s) and waits for it.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Output returns what the process printed so far.
func (p *Process) Output() string { return p.output.String() }

// StartXvnc starts TigerVNC's Xvnc with security None (or the given extra
// arguments, such as "-SecurityTypes", "VncAuth", "-PasswordFile", f) on a free
// port and returns its address.
func StartXvnc(t testing.TB, extraArgs ...string) string {
	t.Helper()
	bin := Require(t, "Xvnc", "tigervnc-standalone-server")
	port := FreePort(t)
	// A display number nobody else uses: Xvnc takes a lock file per display.
	display := 100 + port%800
	args := []string{":" + strconv.Itoa(display), "-localhost", "-rfbport", strconv.Itoa(port),
		"-geometry", "800x600", "-depth", "24", "-nolisten", "tcp"}
	if len(extraArgs) == 0 {
		extraArgs = []string{"-SecurityTypes", "None"}
	}
	args = append(args, extraArgs...)
	p := Start(t, bin, args...)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := WaitDial("tcp", addr, 10*time.Second); err != nil {
		t.Fatalf("Xvnc did not start: %v\n%s", err, p.Output())
	}
	return addr
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil // enough to diagnose; never grow without bound
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Dial connects to a TCP address for the test, with a deadline for the
// whole conversation; the connection closes when the test ends.
func Dial(t testing.TB, addr string, deadline time.Duration) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(deadline))
	return c
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
