package testenv

import (
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// QEMUSpice says how StartQEMUSpice sets up the SPICE server of a diskless
// x86 machine with a QXL card (which shows the SeaBIOS screen).
type QEMUSpice struct {
	// Password, when set, is the SPICE ticket the server asks for; without
	// one the server runs with disable-ticketing=on.
	Password string
}

// StartQEMUSpice starts qemu-system-x86_64 with its SPICE server on a free
// port and returns the address.
func StartQEMUSpice(t testing.TB, q QEMUSpice) string {
	t.Helper()
	addr, _ := StartQEMUSpiceProcess(t, q)
	return addr
}

// StartQEMUSpiceProcess is StartQEMUSpice that also returns the process,
// for a test that watches whether QEMU survives what it does.
func StartQEMUSpiceProcess(t testing.TB, q QEMUSpice) (string, *Process) {
	t.Helper()
	bin := Require(t, "qemu-system-x86_64", "qemu-system-x86")
	port := FreePort(t)
	spice := "port=" + strconv.Itoa(port) + ",addr=127.0.0.1"
	args := []string{"-display", "none", "-m", "64", "-nodefaults", "-vga", "qxl"}
	if q.Password != "" {
		// The secret's value in a file, not on the command line;
		// password-secret= replaces the deprecated password=.
		file := filepath.Join(t.TempDir(), "spice-password")
		writeFile(t, file, q.Password)
		args = append(args, "-object", "secret,id=spicepw,file="+qemuEscape(file))
		spice += ",password-secret=spicepw"
	} else {
		spice += ",disable-ticketing=on"
	}
	args = append(args, "-spice", spice)
	p := Start(t, bin, args...)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitQEMU(t, p, addr)
	return addr, p
}

// waitQEMU waits until QEMU accepts on addr, failing the test with its
// output if it exits or takes longer than 30s (a loaded machine under TCG).
func waitQEMU(t testing.TB, p *Process, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for WaitDial("tcp", addr, 100*time.Millisecond) != nil {
		select {
		case <-p.Done():
			t.Fatalf("QEMU exited: %v\n%s", p.err, p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU does not accept on %s after 30s\n%s", addr, p.Output())
		}
	}
}
