// Command print prints what scripts/xcaddy-build.sh needs from xcaddy.json:
// "xcaddy_version", "output" (the binary's path), or "args", xcaddy's
// arguments one per line.
package main

import (
	"fmt"
	"os"

	"github.com/vncgate/caddy-vnc-proxy/internal/buildmanifest"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: print xcaddy.json xcaddy_version|output|args")
		os.Exit(2)
	}
	m, err := buildmanifest.Load(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	switch os.Args[2] {
	case "xcaddy_version":
		fmt.Println(m.XcaddyVersion)
	case "output":
		fmt.Println(m.Output)
	case "args":
		for _, a := range m.XcaddyArgs() {
			fmt.Println(a)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown field", os.Args[2])
		os.Exit(2)
	}
}
