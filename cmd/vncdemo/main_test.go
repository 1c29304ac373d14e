package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// lineWriter hands what run prints to the test, line by line.
type lineWriter struct{ lines chan string }

func (w lineWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.lines <- l
	}
	return len(p), nil
}

// startRun runs the command in-process and returns the addresses it
// announces and a function that stops it and returns run's error.
func startRun(t *testing.T, n int, env map[string]string, args ...string) ([]string, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := lineWriter{make(chan string, 10)}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, func(k string) string { return env[k] }, out, io.Discard) }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("run did not return after cancel")
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	var addrs []string
	for len(addrs) < n {
		select {
		case l := <-out.lines:
			addr, ok := strings.CutPrefix(l, "vncdemo listening on ")
			if !ok {
				t.Fatalf("unexpected output %q", l)
			}
			addrs = append(addrs, addr)
		case err := <-done:
			t.Fatalf("run ended before listening: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no listening line")
		}
	}
	return addrs, stop
}

func handshake(t *testing.T, network, addr, password string) (rfb.ServerInit, error) {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return rfb.ClientHandshake(c, password)
}

func TestTCPAndUnix(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vnc.sock")
	addrs, stop := startRun(t, 2, nil, "-listen", "127.0.0.1:0", "-unix", sock, "-geometry", "320x240", "-name", "demo one")
	if !strings.HasPrefix(addrs[0], "127.0.0.1:") || addrs[1] != "unix:"+sock {
		t.Fatalf("announced %q", addrs)
	}
	for _, na := range [][2]string{{"tcp", addrs[0]}, {"unix", sock}} {
		si, err := handshake(t, na[0], na[1], "")
		if err != nil || si.Width != 320 || si.Height != 240 || si.Name != "demo one" {
			t.Errorf("%s: %+v, %v", na[0], si, err)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestUnixOnly(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vnc.sock")
	addrs, _ := startRun(t, 1, nil, "-unix", sock)
	if addrs[0] != "unix:"+sock {
		t.Fatalf("announced %q", addrs)
	}
	if _, err := handshake(t, "unix", sock, ""); err != nil {
		t.Fatal(err)
	}
}

func TestPasswordSources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(file, []byte("fromfile\nignored\n"), 0o600)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"env", map[string]string{"VNCDEMO_PASSWORD": "fromenv"}, nil, "fromenv"},
		{"flag", map[string]string{"VNCDEMO_PASSWORD": "fromenv"}, []string{"-password", "fromflag"}, "fromflag"},
		{"file", map[string]string{"VNCDEMO_PASSWORD": "fromenv"}, []string{"-password-file", file}, "fromfile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addrs, _ := startRun(t, 1, tc.env, append([]string{"-listen", "127.0.0.1:0"}, tc.args...)...)
			si, err := handshake(t, "tcp", addrs[0], tc.want)
			if err != nil || si.Security != rfb.SecurityVNCAuth {
				t.Fatalf("right password: %+v, %v", si, err)
			}
			if _, err := handshake(t, "tcp", addrs[0], "other"); !errors.Is(err, rfb.ErrAuthFailed) {
				t.Fatalf("wrong password: %v", err)
			}
		})
	}
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"-geometry", "800"},
		{"-geometry", "0x600"},
		{"-geometry", "99999x600"},
		{"-password", "a", "-password-file", "/dev/null"},
		{"-password-file", "/nonexistent/pw"},
		{"-listen", ""},
		{"-listen", "not an address"},
		{"extra"},
	} {
		err := run(context.Background(), args, func(string) string { return "" }, io.Discard, io.Discard)
		if err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

// TestSignal runs the real binary: it announces its port, serves, and exits
// with status 0 on SIGTERM, closing its clients.
func TestSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "vncdemo")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-listen", "0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "vncdemo listening on 127.0.0.1:")
	if !ok {
		t.Fatalf("first line %q", line)
	}
	c, err := net.Dial("tcp", "127.0.0.1:"+addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := rfb.ClientHandshake(c, ""); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Errorf("client connection after SIGTERM: %v", err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("exit after SIGTERM: %v", waitErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after SIGTERM")
	}
}
