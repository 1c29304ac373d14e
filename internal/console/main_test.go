package console_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestMain runs the tests with Go's HTTP/2 server offering extended
// CONNECT (RFC 8441), which it reads from GODEBUG once, as the process
// starts; so the test binary starts itself again with the setting when it
// is not there. The stream tests need it.
func TestMain(m *testing.M) {
	if godebug := os.Getenv("GODEBUG"); !strings.Contains(godebug, "http2xconnect=1") {
		if godebug != "" {
			godebug += ","
		}
		env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") })
		env = append(env, "GODEBUG="+godebug+"http2xconnect=1")
		if err := syscall.Exec(os.Args[0], os.Args, env); err != nil {
			fmt.Fprintf(os.Stderr, "starting the tests with GODEBUG=http2xconnect=1: %v\n", err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}
