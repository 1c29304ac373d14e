package testenv

import (
	"strings"
	"testing"
	"time"
)

// TestSerialGuest boots the guest, runs a command in its shell over the
// serial console, and documents what a second client of a TCP chardev
// gets: a connection, then silence, until the first leaves.
func TestSerialGuest(t *testing.T) {
	start := time.Now()
	addr := StartSerialGuest(t)
	first := Dial(t, addr, 3*time.Minute)
	// About 10 s on an idle 2-core machine under TCG; 30 to 45 s with
	// other tests running.
	WaitForSerialShell(t, first, 90*time.Second)
	t.Logf("shell after %v", time.Since(start).Round(100*time.Millisecond))

	if _, err := first.Write([]byte("echo $((6*7))\n")); err != nil {
		t.Fatal(err)
	}
	out, err := ReadSerialUntil(first, "42", 30*time.Second, "")
	if err != nil {
		t.Fatalf("%v; read:\n%q", err, out)
	}

	second := Dial(t, addr, 3*time.Minute)
	if _, err := second.Write([]byte("echo second-$((6*7))\n")); err != nil {
		t.Fatalf("writing on the second connection: %v", err)
	}
	out, err = ReadSerialUntil(second, SerialPrompt, 3*time.Second, "\r")
	if err == nil || out != "" {
		t.Fatalf("the second connection got %q, %v; want silence", out, err)
	}
	// Nor did its bytes reach the guest while the first was connected.
	if _, err := first.Write([]byte("echo first-$((6*7))\n")); err != nil {
		t.Fatal(err)
	}
	out, err = ReadSerialUntil(first, "first-42", 30*time.Second, "")
	if err != nil {
		t.Fatalf("%v; read:\n%q", err, out)
	}
	if strings.Contains(out, "second-42") {
		t.Fatalf("the second connection's command ran while the first was live:\n%q", out)
	}

	// Once the first leaves, the second is served.
	first.Close()
	WaitForSerialShell(t, second, 30*time.Second)
}
