package caddymodule

import (
	"errors"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfbproxy"
)

// ClipboardPolicy is which way a console's clipboard text may go, and how
// much of it. Anything but the defaults makes consoles RFB-aware and has
// the proxy frame both streams: the browser's, to drop its clipboard, and
// the VNC server's, to drop the server's (its SetEncodings then loses what
// the proxy cannot frame: JPEG and unknown encodings). A token's record
// may narrow it with "clipboard": "both", "copy", "paste" or "none".
type ClipboardPolicy struct {
	// The VNC server's clipboard reaches the browser (ServerCutText,
	// Extended Clipboard). Default: true.
	Copy *bool `json:"copy,omitempty"`
	// The browser's clipboard reaches the VNC server (ClientCutText,
	// Extended Clipboard). Default: true.
	Paste *bool `json:"paste,omitempty"`
	// The largest clipboard text passed either way, in bytes (for
	// Extended Clipboard, inflated); a larger one is dropped whole,
	// never truncated. Default: 1 MiB.
	MaxSize int64 `json:"max_size,omitempty"`
}

// policy is the console engine's form of the policy; nil is the default.
func (c *ClipboardPolicy) policy() (rfbproxy.Clipboard, error) {
	if c == nil {
		return rfbproxy.Clipboard{}, nil
	}
	if c.MaxSize < 0 {
		return rfbproxy.Clipboard{}, errors.New("clipboard max_size must not be negative")
	}
	return rfbproxy.Clipboard{
		NoCopy:  c.Copy != nil && !*c.Copy,
		NoPaste: c.Paste != nil && !*c.Paste,
		MaxSize: c.MaxSize,
	}, nil
}

// unmarshalCaddyfile reads the block of clipboard:
//
//	clipboard {
//		copy     on|off
//		paste    on|off
//		max_size <size>
//	}
func (c *ClipboardPolicy) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("clipboard: %s already specified", opt)
		}
		seen[opt] = true
		switch opt {
		case "copy", "paste":
			on, err := parseOnOff(d)
			if err != nil {
				return err
			}
			if opt == "copy" {
				c.Copy = &on
			} else {
				c.Paste = &on
			}
		case "max_size":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			size, err := humanize.ParseBytes(s)
			if err != nil || size == 0 || size > 1<<40 {
				return d.Errf("clipboard max_size: invalid size %q", s)
			}
			c.MaxSize = int64(size)
		default:
			return d.Errf("unrecognized clipboard option %q", opt)
		}
	}
	return nil
}
