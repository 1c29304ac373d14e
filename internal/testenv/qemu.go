package testenv

import (
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// QEMU says how StartQEMU sets up the VNC server of a diskless x86 machine
// (which shows the SeaBIOS screen).
type QEMU struct {
	// Password, when set, makes the VNC server ask for VNC authentication
	// (alone, or inside VeNCrypt X509Vnc with TLS).
	Password string
	// TLS, when set, makes the VNC server require VeNCrypt with X.509
	// certificates from this PKI's directory, and the client's certificate.
	TLS *PKI
}

// StartQEMU starts qemu-system-x86_64 with its VNC server on a free port
// and returns the address.
func StartQEMU(t testing.TB, q QEMU) string {
	t.Helper()
	bin := Require(t, "qemu-system-x86_64", "qemu-system-x86")
	port := FreePort(t)
	for port < 5900 {
		port = FreePort(t)
	}
	vnc := "127.0.0.1:" + strconv.Itoa(port-5900)
	args := []string{"-display", "none", "-m", "64", "-nodefaults", "-vga", "std"}
	if q.Password != "" {
		// The secret's value in a file, not on the command line.
		file := filepath.Join(t.TempDir(), "vnc-password")
		writeFile(t, file, q.Password)
		args = append(args, "-object", "secret,id=vncpw,file="+qemuEscape(file))
		vnc += ",password-secret=vncpw"
	}
	if q.TLS != nil {
		args = append(args, "-object", "tls-creds-x509,id=vnctls,dir="+qemuEscape(q.TLS.Dir)+",endpoint=server,verify-peer=on")
		vnc += ",tls-creds=vnctls"
	}
	args = append(args, "-vnc", vnc)
	p := Start(t, bin, args...)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitQEMU(t, p, addr)
	return addr
}

// qemuEscape doubles the commas of a value in QEMU's option syntax.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// VNCPasswordFile writes password in TigerVNC's obfuscated form (vncpasswd
// -f) and returns the file, for Xvnc's -PasswordFile.
func VNCPasswordFile(t testing.TB, password string) string {
	t.Helper()
	vncpasswd := Require(t, "vncpasswd", "tigervnc-tools")
	cmd := exec.Command(vncpasswd, "-f")
	cmd.Stdin = strings.NewReader(password + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("vncpasswd -f: %v", err)
	}
	file := filepath.Join(t.TempDir(), "passwd")
	writeFile(t, file, string(out))
	return file
}
