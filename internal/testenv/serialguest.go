package testenv

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SerialPrompt is the guest shell's prompt, set by its /init so a test can
// tell the prompt from anything else on the console.
const SerialPrompt = "guest# "

// serialInit is the guest's /init: busybox's applets, the kernel's
// filesystems, then a shell on the console (cttyhack opens the real console,
// ttyS0, as the controlling terminal, so the shell has job control and
// Ctrl-C works), started again whenever it exits.
const serialInit = `#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
export PS1='` + SerialPrompt + `' HOME=/ PATH=/bin:/sbin
while true; do setsid cttyhack sh; done
`

// StartSerialGuest boots a real Linux guest (Debian's kernel, an initramfs
// of busybox-static) whose console is a shell on its first serial port,
// which QEMU serves on a TCP chardev as libvirt and nova configure it; it
// returns the chardev's address. The guest boots in the background (about
// 10 s under TCG on an idle machine, several times that on a loaded one):
// WaitForSerialShell waits for its prompt. Its shell echoes what it is sent
// and asks the terminal for the cursor position (ESC [ 6 n) at each prompt.
//
// A TCP chardev serves one client: a second connection is accepted and
// then gets nothing, either way, until the first leaves.
func StartSerialGuest(t testing.TB) string {
	t.Helper()
	bin := Require(t, "qemu-system-x86_64", "qemu-system-x86")
	kernel := debianKernel(t)
	initrd := filepath.Join(t.TempDir(), "initrd.gz")
	if err := os.WriteFile(initrd, serialInitramfs(t), 0o600); err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p := Start(t, bin, SerialGuestArgs(kernel, initrd, addr)...)
	waitQEMU(t, p, addr)
	return addr
}

// SerialGuestArgs are QEMU's arguments for the serial guest of kernel and
// initrd (BuildSerialInitramfs), its console on a TCP chardev at addr; the
// demo (cmd/serialguest) boots the same guest.
func SerialGuestArgs(kernel, initrd, addr string) []string {
	return []string{"-nodefaults", "-display", "none", "-m", "128", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1",
		"-serial", "tcp:" + qemuEscape(addr) + ",server=on,wait=off"}
}

// WaitForSerialShell reads the guest's console on conn until its shell
// prompt appears, pressing Enter every second (the prompt may have been
// printed before the test connected: a TCP chardev drops what the guest
// writes while no client is connected), and returns what it read. It fails
// the test after timeout.
func WaitForSerialShell(t testing.TB, conn net.Conn, timeout time.Duration) string {
	t.Helper()
	out, err := ReadSerialUntil(conn, SerialPrompt, timeout, "\r")
	if err != nil {
		t.Fatalf("no shell prompt on the serial console: %v; read:\n%q", err, out)
	}
	return out
}

// ReadSerialUntil reads from conn until want appears or timeout passes,
// writing nudge (if not empty) every second meanwhile, and returns what it
// read. It leaves conn without a deadline.
func ReadSerialUntil(conn net.Conn, want string, timeout time.Duration, nudge string) (string, error) {
	defer conn.SetReadDeadline(time.Time{})
	var got []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if nudge != "" {
			if _, err := conn.Write([]byte(nudge)); err != nil {
				return string(got), fmt.Errorf("writing to the serial console: %w", err)
			}
		}
		next := time.Now().Add(time.Second)
		if next.After(deadline) {
			next = deadline
		}
		_ = conn.SetReadDeadline(next)
		for {
			n, err := conn.Read(buf)
			got = append(got, buf[:n]...)
			if bytes.Contains(got, []byte(want)) {
				return string(got), nil
			}
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					break
				}
				return string(got), fmt.Errorf("reading the serial console: %w", err)
			}
		}
	}
	return string(got), fmt.Errorf("%q not seen in %v", want, timeout)
}

// debianKernel returns the newest /boot/vmlinuz-*, or skips the test
// (fails it in CI) naming the package that installs one.
func debianKernel(t testing.TB) string {
	t.Helper()
	kernel, err := DebianKernel()
	if err == nil {
		return kernel
	}
	msg := err.Error() + " (make test-deps does)"
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// DebianKernel returns the newest readable /boot/vmlinuz-*, or an error
// naming the package that installs one.
func DebianKernel() (string, error) {
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	slices.Sort(kernels)
	for i := len(kernels) - 1; i >= 0; i-- {
		if f, err := os.Open(kernels[i]); err == nil {
			f.Close()
			return kernels[i], nil
		}
	}
	return "", errors.New("no readable /boot/vmlinuz-*: install the Debian package linux-image-amd64")
}

var initramfs struct {
	once sync.Once
	data []byte
	err  error
}

// serialInitramfs returns the guest's initramfs (gzipped cpio), built once
// per test process from /bin/busybox (busybox-static: the guest has no C
// library) and serialInit.
func serialInitramfs(t testing.TB) []byte {
	t.Helper()
	busybox := Require(t, "busybox", "busybox-static")
	initramfs.once.Do(func() {
		initramfs.data, initramfs.err = BuildSerialInitramfs(busybox)
	})
	if initramfs.err != nil {
		msg := initramfs.err.Error()
		if strings.Contains(msg, "busybox-static") && !InCI() {
			t.Skip(msg)
		}
		t.Fatal(msg)
	}
	return initramfs.data
}

// BuildSerialInitramfs builds the serial guest's initramfs (gzipped cpio)
// from busybox, which must be statically linked (Debian's busybox-static),
// and serialInit.
func BuildSerialInitramfs(busybox string) ([]byte, error) {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("reading busybox: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(bb))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", busybox, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("%s is dynamically linked: install the Debian package busybox-static", busybox)
		}
	}
	var buf bytes.Buffer
	z := gzip.NewWriter(&buf)
	w := cpioWriter{w: z}
	for _, dir := range []string{"bin", "sbin", "dev", "proc", "sys", "tmp", "usr", "usr/bin", "usr/sbin"} {
		w.entry(dir, 0o040755, 0, nil)
	}
	// The kernel opens /dev/console for init's stdin, stdout and stderr
	// before devtmpfs is mounted: without the node init has no console.
	w.entry("dev/console", 0o020600, 5<<8|1, nil)
	w.entry("bin/busybox", 0o100755, 0, bb)
	w.entry("init", 0o100755, 0, []byte(serialInit))
	w.entry("TRAILER!!!", 0, 0, nil)
	if w.err != nil {
		return nil, fmt.Errorf("writing the initramfs: %w", w.err)
	}
	if err := z.Close(); err != nil {
		return nil, fmt.Errorf("writing the initramfs: %w", err)
	}
	return buf.Bytes(), nil
}

// cpioWriter writes the "newc" cpio format the kernel unpacks an
// initramfs from: a 110-byte ASCII header, the name, the data, each padded
// to four bytes.
type cpioWriter struct {
	w   io.Writer
	ino int
	err error
}

// entry writes one file; rdev is major<<8|minor for a device node.
func (c *cpioWriter) entry(name string, mode uint32, rdev int, data []byte) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev>>8, rdev&0xff, len(name)+1, 0)
	rec := append([]byte(hdr), name...)
	rec = append(rec, 0)
	rec = pad4(rec)
	rec = append(rec, data...)
	rec = pad4(rec)
	_, c.err = c.w.Write(rec)
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
