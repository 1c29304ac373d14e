// Package buildmanifest reads xcaddy.json, the manifest from which a
// production Caddy with this plugin is built by xcaddy, and turns it into
// xcaddy's command line.
package buildmanifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Manifest is the content of xcaddy.json.
type Manifest struct {
	// CaddyVersion is the Caddy release to build, e.g. "v2.11.9"; it must
	// equal the version in go.mod.
	CaddyVersion string `json:"caddy_version"`
	// Plugins are the Caddy modules to build in.
	Plugins []Plugin `json:"plugins"`
	// Output is the path of the binary to write.
	Output string `json:"output"`
	// XcaddyVersion is the xcaddy release to run.
	XcaddyVersion string `json:"xcaddy_version"`
}

// Plugin is one module for xcaddy's --with.
type Plugin struct {
	// Module is the Go module path, optionally with @version.
	Module string `json:"module"`
	// Replacement is a local directory (or module@version) to build the
	// module from instead of the module proxy's copy.
	Replacement string `json:"replacement,omitempty"`
}

// Load reads and checks a manifest file.
func Load(path string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case !strings.HasPrefix(m.CaddyVersion, "v2."):
		return m, fmt.Errorf("%s: caddy_version %q is not a Caddy v2 release", path, m.CaddyVersion)
	case len(m.Plugins) == 0:
		return m, fmt.Errorf("%s: no plugins", path)
	case m.Output == "":
		return m, fmt.Errorf("%s: no output", path)
	case m.XcaddyVersion == "":
		return m, fmt.Errorf("%s: no xcaddy_version", path)
	}
	for _, p := range m.Plugins {
		if p.Module == "" {
			return m, errors.New(path + ": a plugin without module")
		}
	}
	return m, nil
}

// XcaddyArgs returns the arguments for `xcaddy`: build, the version,
// --with for each plugin and --output.
func (m Manifest) XcaddyArgs() []string {
	args := []string{"build", m.CaddyVersion}
	for _, p := range m.Plugins {
		with := p.Module
		if p.Replacement != "" {
			with += "=" + p.Replacement
		}
		args = append(args, "--with", with)
	}
	return append(args, "--output", m.Output)
}
