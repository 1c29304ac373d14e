package admission

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

// Protocol is what a handler's targets speak; it decides what the
// pipeline reads from a target before the upgrade, and which options make
// sense.
type Protocol string

// The protocols of the protocol option.
const (
	// ProtocolVNC: the target must greet with an RFB version (and the
	// proxy may log in to it: RFB-aware mode, view-only).
	ProtocolVNC Protocol = "vnc"
	// ProtocolSPICE: the SPICE client speaks first, so nothing is read
	// from the target before the upgrade.
	ProtocolSPICE Protocol = "spice"
	// ProtocolSerial: a serial console's TCP port, raw bytes both ways;
	// a target serves one console at a time.
	ProtocolSerial Protocol = "serial"
	// ProtocolRaw: any byte stream, nothing checked (what check_rfb off
	// did).
	ProtocolRaw Protocol = "raw"
)

// ParseProtocol reads a protocol option's value; "" is ProtocolVNC, the
// default.
func ParseProtocol(s string) (Protocol, error) {
	switch p := Protocol(s); p {
	case "":
		return ProtocolVNC, nil
	case ProtocolVNC, ProtocolSPICE, ProtocolSerial, ProtocolRaw:
		return p, nil
	}
	return "", fmt.Errorf("protocol %q: want vnc, spice, serial or raw", s)
}

// speaksRFB reports whether the pipeline reads the target's RFB greeting.
func (p Protocol) speaksRFB() bool { return p == ProtocolVNC }

// errConsoleInUse: the serial target already has a live console.
var errConsoleInUse = errors.New("the serial console already has a client")

// serialConsoles are the serial targets with a console, live or being
// opened, in this process, across handlers, listeners and config reloads:
// a QEMU TCP chardev serves one client, and a second connection is
// accepted and then hangs, silently, until the first leaves, so a second
// console must be refused before it is dialed.
var serialConsoles = targetsInUse{inUse: make(map[string]bool)}

// targetsInUse is a set of targets, each reserved by one console.
type targetsInUse struct {
	mu    sync.Mutex
	inUse map[string]bool
}

// reserve claims t unless a console has it; release gives it back, once.
func (u *targetsInUse) reserve(t tokenresolver.Target) (release func(), err error) {
	key := targetKey(t)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.inUse[key] {
		return nil, errConsoleInUse
	}
	u.inUse[key] = true
	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			delete(u.inUse, key)
			u.mu.Unlock()
		})
	}, nil
}

// targetKey names a target as the set knows it: host names are not case
// sensitive. (A target reached by two different names or addresses counts
// as two: the set is checked before the dial, where no name is resolved
// yet.)
func targetKey(t tokenresolver.Target) string {
	if t.Network == "unix" {
		return t.String()
	}
	return strings.ToLower(t.String())
}
