package main

import (
	"fmt"
	"image/color"
	"strings"
)

// Column names (the -variants names and the keys in latest.json), in table
// order.
const (
	vDirect     = "direct"
	vRelay      = "tcp_relay"
	vOurs       = "vnc_proxy"
	vOursTLS    = "vnc_proxy_tls"
	vOursH2     = "vnc_proxy_h2"     // WebSocket over HTTP/2 (RFC 8441), GODEBUG=http2xconnect=1
	vOursH3     = "vnc_proxy_h3"     // WebSocket over HTTP/3 (RFC 9220)
	vOursRFB    = "vnc_proxy_rfb"    // RFB-aware: the proxy logs in with a VNC password
	vOursView   = "vnc_proxy_view"   // RFB-aware and view-only: every message framed
	vOursNative = "vnc_proxy_native" // the native listener: RFB 3.8, VeNCrypt X509Plain, TLS
	vOursSerial = "vnc_proxy_serial" // protocol serial: a raw relay, one console per target
	vOursClip   = "vnc_proxy_clip"   // a clipboard policy: the server's stream framed as RFB messages
	vOursRec    = "vnc_proxy_rec"    // a recorded console (record), RFB-aware
	vOursSPICE  = "vnc_proxy_spice"  // protocol spice: a console of four channels
	vWebsockify = "websockify"
)

// proxyKind is the process a column's consoles go through.
type proxyKind int

const (
	noProxy    proxyKind = iota // the client talks to the load target itself
	caddyProxy                  // bin/caddy with the Caddyfile built from the columns' snippets
	websockifyProxy
	relayProxy
)

// targetKind is the server a column's consoles go to.
type targetKind int

const (
	// loadTarget: internal/loadtarget (greeting, then commands).
	loadTarget targetKind = iota
	// serialTarget: the load targets' loopback aliases, one address each:
	// a serial target serves one console at a time, so that every
	// measurement, open rate and idle sessions included, needs a target
	// of its own per console.
	serialTarget
	// framedTarget: loadtarget's Framed server, which speaks as a VNC
	// server after the login (ServerInit, then server messages), for
	// routes that frame the server's stream.
	framedTarget
	// spiceTarget: internal/spice's StandIn.
	spiceTarget
)

// column is one column of the table: one way from the client to the load
// target. Adding a column is an entry in columns. For a vnc_proxy column
// that is a Caddyfile snippet (a route in one of the sites, or a global
// option) and a dial function; the harness puts the snippets of every
// vnc_proxy column measured into one Caddyfile (bench/Caddyfile.tmpl), so
// each vnc_proxy run serves all of them, and runs every measurement
// through dial. A column whose consoles cannot take every measurement
// lists those it can take in only.
type column struct {
	name  string     // the -variants name and the key in latest.json
	label string     // the table's heading
	short string     // under the chart's bars
	color color.RGBA // the chart's bars
	proxy proxyKind

	// Caddyfile snippets, Go templates with the fields of caddyConfig: in
	// the global options block, in the plain-HTTP site (http://127.0.0.1:
	// {{.HTTPPort}}) and in the HTTPS site (tls internal).
	global, http, https string

	// dial opens a console to the load target that token names, through
	// the running proxy pp (nil for direct TCP). bufSize sizes the
	// client's buffers: 64 KiB for the throughput runs, small for idle
	// sessions. The stream it returns reads the load target's greeting
	// first (a dial that speaks a handshake of its own replays it, as
	// rfbStream does) and then carries its commands.
	dial func(env *benchEnv, pp *proxyProc, token string, bufSize int) dialFunc

	// idle: memory per idle session is measured (a proxy process that
	// can hold thousands of sessions).
	idle bool
	// target is the server the consoles go to.
	target targetKind
	// conns is how many WebSockets a console opens (0: one): the idle
	// measurement opens that many times fewer consoles, as many
	// connections as for the other columns.
	conns int
	// files is how many files a console holds open besides its two
	// sockets (a recording's): the idle measurement opens as many
	// consoles as fit the same descriptors.
	files int
	// only lists the metrics measured (nil: all of them).
	only []string
	// note, when set, explains the column under the table.
	note string
	// compare names the columns this one's ratios are reported against
	// (in latest.json's "ratios" and a note under the table), those of
	// them that were measured.
	compare []string
	// paired: besides its own runs, each run pairs the column's
	// target→browser throughput with that of each compare column served
	// over plain HTTP, back to back in the same proxy process (-pairs),
	// for a ratio the drift of a long run on a shared machine does not
	// blur.
	paired bool
}

// columns, in table order.
var columns = []column{
	{
		name: vDirect, label: "direct TCP", short: "direct", color: rgb(0x9e9e9e),
		dial: func(env *benchEnv, _ *proxyProc, _ string, _ int) dialFunc { return dialTCP(env.targetAddr) },
	},
	{
		name: vRelay, label: "Go TCP relay", short: "relay", color: rgb(0xc8c8c8), proxy: relayProxy,
		dial: func(_ *benchEnv, pp *proxyProc, _ string, _ int) dialFunc { return dialTCP(pp.tcpAddr) },
	},
	{
		name: vOurs, label: "vnc_proxy ws", short: "ws", color: rgb(0x1f77b4), proxy: caddyProxy, idle: true,
		http: `vnc_proxy /websockify {
		resolver file {{.TokenFile}}
	}`,
		dial: wsRoute("ws", "/websockify"),
	},
	{
		name: vOursTLS, label: "vnc_proxy wss", short: "wss", color: rgb(0x6baed6), proxy: caddyProxy, idle: true,
		https: httpsRoute,
		dial:  wsRoute("wss", "/websockify"),
	},
	{
		name: vOursH2, label: "vnc_proxy HTTP/2", short: "h2", color: rgb(0x9ecae1), proxy: caddyProxy, idle: true,
		https: httpsRoute,
		dial:  streamRoute(false, "/websockify"),
	},
	{
		name: vOursH3, label: "vnc_proxy HTTP/3", short: "h3", color: rgb(0xc6dbef), proxy: caddyProxy, idle: true,
		https: httpsRoute,
		dial:  streamRoute(true, "/websockify"),
	},
	{
		// The RFB-aware mode: the proxy logs in with the target's password.
		name: vOursRFB, label: "RFB-aware ws (VNC password)", short: "rfb", color: rgb(0x2ca02c), proxy: caddyProxy, idle: true,
		http: `vnc_proxy /rfb-aware {
		resolver file {{.TokenFile}}
		vnc_auth {
			password {{.Password}}
		}
	}`,
		dial: rfbRoute("/rfb-aware", false),
	},
	{
		// The same, view-only: every browser message is framed by the filter.
		name: vOursView, label: "view-only ws", short: "view", color: rgb(0x98df8a), proxy: caddyProxy, idle: true,
		http: `vnc_proxy /view-only {
		resolver file {{.TokenFile}}
		vnc_auth {
			password {{.Password}}
		}
		view_only on
	}`,
		dial: rfbRoute("/view-only", true),
	},
	{
		// The native listener (the vnc_proxy global option): TLS with a
		// certificate from Caddy's local CA for localhost, whose root the
		// client trusts; the token as VeNCrypt Plain's password; the proxy
		// logs in to the target as in RFB-aware mode.
		name: vOursNative, label: "native VNC (TLS)", short: "native", color: rgb(0x9467bd), proxy: caddyProxy, idle: true,
		compare: []string{vDirect, vWebsockify, vOursTLS, vOursRFB},
		note:    "native VNC (TLS): the native listener (the vnc_proxy global option): RFB 3.8, VeNCrypt X509Plain, TLS 1.3 with a certificate from Caddy's local CA for localhost (the client checks it against the CA's root), the token as the password; the proxy logs in to the stand-in with its VNC password, as for RFB-aware ws, and relays bytes inside TLS with no WebSocket framing. Every open is a full TLS handshake (no session resumption), as for wss.",
		global: `vnc_proxy {
		listen 127.0.0.1:{{.NativePort}}
		server_name ` + nativeServerName + `
		resolver file {{.TokenFile}}
		vnc_auth {
			password {{.Password}}
		}
	}`,
		dial: func(env *benchEnv, pp *proxyProc, token string, _ int) dialFunc {
			return dialNative(pp.nativeAddr, token, env.caddyRoots)
		},
	},
	{
		// A clipboard policy: the proxy frames both streams as RFB
		// messages, so the stand-in speaks as a VNC server.
		name: vOursClip, label: "clipboard filtered ws", short: "clip", color: rgb(0xbcbd22), proxy: caddyProxy, idle: true, target: framedTarget,
		compare: []string{vOurs, vOursRFB},
		paired:  true,
		note:    "clipboard filtered ws: an RFB-aware console (vnc_auth) with clipboard { copy off; paste off }: the proxy frames the VNC server's stream as RFB messages (to drop its clipboard) and the browser's as client messages. Its stand-in (loadtarget's Framed) speaks as a VNC server after the login: a ServerInit (1024×768, 32 bpp), the stream down as the pixels of FramebufferUpdates of one Raw rectangle each (1024×16, 64 KiB), which the client takes apart and checks byte by byte; echoes and the up answer in ServerFences; the client's command and bytes up in ClientFences of 64 bytes (as for view-only ws, so up throughput and round trip are those of fenced input).",
		http: `vnc_proxy /clipboard {
		resolver file {{.TokenFile}}
		vnc_auth {
			password {{.Password}}
		}
		clipboard {
			copy off
			paste off
		}
	}`,
		dial: framedRoute("/clipboard", true),
	},
	{
		// A recorded console: RFB-aware, every chunk of the server's
		// stream copied to the recording's queue.
		name: vOursRec, label: "recorded ws", short: "rec", color: rgb(0x17becf), proxy: caddyProxy, idle: true, target: framedTarget, files: 1,
		compare: []string{vOurs, vOursRFB},
		paired:  true,
		note:    "recorded ws: an RFB-aware console (vnc_auth) recorded with record <dir> { max_total 2GiB } to the harness's temporary directory (the machine's disk): its stream is copied (never spliced) and every chunk queued for the recording's writer; recording after recording accumulates there during a run, max_total deleting the oldest. A recorded console holds its recording's file open: its idle memory is measured with two thirds as many consoles, to fit the same file descriptors.",
		http: `vnc_proxy /recorded {
		resolver file {{.TokenFile}}
		vnc_auth {
			password {{.Password}}
		}
		record {{.Dir}}/recordings {
			max_total 2GiB
		}
	}`,
		dial: framedRoute("/recorded", true),
	},
	{
		// A serial console: raw bytes both ways, to a TCP port that
		// serves one console at a time (a QEMU chardev's shape).
		name: vOursSerial, label: "serial ws", short: "serial", color: rgb(0x8c564b), proxy: caddyProxy, idle: true, target: serialTarget,
		compare: []string{vDirect, vWebsockify, vOurs},
		note:    "serial ws: protocol serial, binary messages; the proxy keeps one console per serial target, so every console goes to a stand-in address of its own (127.1.x.y, the same echoing stand-in). The figures are the proxy's path; a real QEMU chardev adds its own (small) latency.",
		http: `vnc_proxy /serial {
		resolver file {{.SerialTokenFile}}
		protocol serial
	}`,
		dial: wsRoute("ws", "/serial"),
	},
	{
		// A SPICE console: four channels, each a WebSocket and a SPICE
		// link, to the SPICE stand-in, which echoes after the link.
		name: vOursSPICE, label: "SPICE console (4 channels)", short: "spice", color: rgb(0xe377c2), proxy: caddyProxy, idle: true,
		target: spiceTarget, conns: spiceChannels,
		only:    []string{mIdle, mOpen, mOpenCPU, mRTT50, mRTT99},
		compare: []string{vOurs},
		note:    "SPICE console (4 channels): protocol spice to internal/spice's StandIn (which links every channel as spice-server does, sends MAIN_INIT with a session id, answers DISPLAY_INIT and then echoes). A console is what spice-html5 opens: the main channel, then display, inputs and cursor with main's session id, so each open is 4 WebSockets and 4 SPICE links (the ticket RSA-encrypted by the client), and its open rate is consoles/s; memory is per idle console of four channels (a quarter as many consoles as idle sessions for ws, the same number of WebSockets); the round trip is a 16-byte message on the main channel, echoed. No throughput: the stand-in only echoes.",
		http: `vnc_proxy /spice {
		resolver file {{.TokenFile}}
		protocol spice
	}`,
		dial: spiceRoute("/spice"),
	},
	{
		name: vWebsockify, label: "websockify 0.10", short: "websockify", color: rgb(0xff7f0e), proxy: websockifyProxy, idle: true,
		dial: func(_ *benchEnv, pp *proxyProc, token string, bufSize int) dialFunc {
			return dialWS(pp.wsBase+token, bufSize)
		},
	},
}

// httpsRoute is the HTTPS site's route, for wss, HTTP/2 and HTTP/3 alike
// (a snippet that several columns give goes into the Caddyfile once).
const httpsRoute = `vnc_proxy /websockify {
		resolver file {{.TokenFile}}
	}`

// nativeServerName is the native listener's certificate name: Caddy
// issues it from its local CA, a name that is not public.
const nativeServerName = "localhost"

func rgb(x uint32) color.RGBA {
	return color.RGBA{byte(x >> 16), byte(x >> 8), byte(x), 0xff}
}

// wsRoute dials a WebSocket route of the plain ("ws") or HTTPS ("wss")
// site.
func wsRoute(scheme, path string) func(*benchEnv, *proxyProc, string, int) dialFunc {
	return func(_ *benchEnv, pp *proxyProc, token string, bufSize int) dialFunc {
		return dialWS(pp.url(scheme, path, token), bufSize)
	}
}

// streamRoute dials a route of the HTTPS site over HTTP/2 or HTTP/3.
func streamRoute(h3 bool, path string) func(*benchEnv, *proxyProc, string, int) dialFunc {
	return func(_ *benchEnv, pp *proxyProc, token string, _ int) dialFunc {
		return dialStream(h3, pp.url("https", path, token))
	}
}

// rfbRoute dials an RFB-aware route of the plain site; fenced for a
// view-only one.
func rfbRoute(path string, fenced bool) func(*benchEnv, *proxyProc, string, int) dialFunc {
	return func(_ *benchEnv, pp *proxyProc, token string, bufSize int) dialFunc {
		return dialWSRFB(pp.url("ws", path, token), bufSize, fenced)
	}
}

// framedRoute dials an RFB-aware route whose console frames the server's
// stream, to a Framed load target; fenced for one that frames the
// client's messages too.
func framedRoute(path string, fenced bool) func(*benchEnv, *proxyProc, string, int) dialFunc {
	return func(_ *benchEnv, pp *proxyProc, token string, bufSize int) dialFunc {
		return dialWSFramed(pp.url("ws", path, token), bufSize, fenced)
	}
}

// spiceRoute dials a protocol spice route: a console of spiceChannels
// channels.
func spiceRoute(path string) func(*benchEnv, *proxyProc, string, int) dialFunc {
	return func(_ *benchEnv, pp *proxyProc, token string, bufSize int) dialFunc {
		return dialSPICE(pp.url("ws", path, token), bufSize)
	}
}

// url is a route's URL up to and including the token.
func (pp *proxyProc) url(scheme, path, token string) string {
	port := pp.httpPort
	if scheme == "wss" || scheme == "https" {
		port = pp.httpsPort
	}
	return fmt.Sprintf("%s://127.0.0.1:%d%s?token=%s", scheme, port, path, token)
}

func columnByName(name string) (column, bool) {
	for _, c := range columns {
		if c.name == name {
			return c, true
		}
	}
	return column{}, false
}

// column returns the column name if it is measured in this run.
func (e *benchEnv) column(name string) (column, bool) {
	for _, c := range e.columns {
		if c.name == name {
			return c, true
		}
	}
	return column{}, false
}

func mustColumn(name string) column {
	c, ok := columnByName(name)
	if !ok {
		panic("no column " + name)
	}
	return c
}

func columnNames() []string {
	var n []string
	for _, c := range columns {
		n = append(n, c.name)
	}
	return n
}

// measures reports whether the column takes metric m.
func (c column) measures(m string) bool {
	if c.only == nil {
		return true
	}
	for _, x := range c.only {
		if x == m {
			return true
		}
	}
	return false
}

// variantLabel, variantShort and variantColor are the columns' headings,
// chart labels and colours by name.
var variantLabel, variantShort = columnStrings()

var variantColor = func() map[string]color.RGBA {
	m := map[string]color.RGBA{}
	for _, c := range columns {
		m[c.name] = c.color
	}
	return m
}()

func columnStrings() (label, short map[string]string) {
	label, short = map[string]string{}, map[string]string{}
	for _, c := range columns {
		label[c.name], short[c.name] = c.label, c.short
		if c.short == "" {
			short[c.name] = strings.TrimPrefix(c.name, "vnc_proxy_")
		}
	}
	return label, short
}
