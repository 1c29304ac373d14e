// Command serialguest boots a real Linux guest whose console is a shell on
// its first serial port, served by QEMU on a TCP chardev as libvirt and
// nova configure it: the target of the demo's serial console
// (CONSOLE=serial make demo), and the guest the tests boot
// (testenv.StartSerialGuest). The guest is Debian's kernel and an
// initramfs of busybox-static, written into -dir.
//
// It prints "serialguest listening on <address>" and then becomes QEMU
// (exec), so that stopping its process stops the guest. A missing program
// or package is reported by the Debian package that installs it.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/vncgate/caddy-vnc-proxy/internal/testenv"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "the serial console's TCP address (port 0: a free port)")
	dir := flag.String("dir", "", "where to write the guest's initramfs (required)")
	flag.Parse()
	if *dir == "" {
		fail("-dir is required")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		fail("qemu-system-x86_64 not found: install the Debian package qemu-system-x86")
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		fail("busybox not found: install the Debian package busybox-static")
	}
	kernel, err := testenv.DebianKernel()
	if err != nil {
		fail(err.Error())
	}
	initramfs, err := testenv.BuildSerialInitramfs(busybox)
	if err != nil {
		fail(err.Error())
	}
	initrd := filepath.Join(*dir, "serialguest-initrd.gz")
	if err := os.WriteFile(initrd, initramfs, 0o600); err != nil {
		fail(err.Error())
	}
	addr, err := freeAddress(*listen)
	if err != nil {
		fail(err.Error())
	}
	fmt.Printf("serialguest listening on %s\n", addr)
	args := append([]string{qemu}, testenv.SerialGuestArgs(kernel, initrd, addr)...)
	if err := syscall.Exec(qemu, args, os.Environ()); err != nil {
		fail("starting QEMU: " + err.Error())
	}
}

// freeAddress is addr, with a port that was free a moment ago in place
// of port 0: QEMU takes the port from its command line.
func freeAddress(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("-listen %q: %w", addr, err)
	}
	if port != "0" {
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "serialguest:", msg)
	os.Exit(1)
}
