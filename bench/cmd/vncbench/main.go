// Command vncbench measures the vnc_proxy handler side by side with a direct
// TCP connection to the VNC server (the limit) and with websockify, all on
// loopback, through the same WebSocket client: throughput each way, echo
// round trip, memory per idle session, session open rate and CPU per GB
// relayed. It writes the medians of several runs as a table (stdout and
// Markdown), JSON and a PNG bar chart.
//
// The VNC server is internal/loadtarget, served by this program in a second
// process; Caddy is
// the bin/caddy built from this repository with the Caddyfile template in
// bench/; websockify is Debian's. Every process started is stopped on exit,
// also on Ctrl-C.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
)

// targetPassword is the load target's VNC password, which the RFB-aware
// variants' vnc_auth logs in with.
const targetPassword = "bench-pw"

// targetProcesses is how many VNC server stand-ins run; idle sessions are
// spread over them.
const targetProcesses = 4

type options struct {
	runs           int
	quick          bool
	caddyBin       string
	websockifyBin  string
	template       string
	outDir         string
	variants       string
	downMiB        int
	pairs          int
	upMiB          int
	websockifyMiB  int
	rttCount       int
	idleSessions   int
	wsIdleSessions int
	openers        int
	openDuration   time.Duration
	cmdline        string
	profileDir     string
	profileSeconds int
	profileVariant string
	relayListen    string
	relayTarget    string
	targetListen   string
	targetAliases  int
	framedListen   string
	spiceListen    string
	keep           bool

	requestedSessions int
	fdLimit           uint64
}

// benchEnv is what every variant's run shares.
type benchEnv struct {
	opts              options
	dir               string
	caddyBin          string
	websockifyBin     string
	caddyfileTemplate string
	tokenFile         string
	token             string   // tokens[0], for every measurement but idle sessions
	targetAddr        string   // targetAddrs[0]
	tokens            []string // one per target process
	targetAddrs       []string
	serialAddrs       []string // the serial stand-ins' addresses, one console each
	serialTokenFile   string
	serialTokens      []string // one per serial stand-in address
	framedAddrs       []string // the Framed load targets, one per target process
	framedTokens      []string
	spiceAddrs        []string // the SPICE stand-ins
	spiceTokens       []string
	columns           []column // the columns measured
	caddyRoots        *rootCA  // Caddy's local CA, which the native client trusts
	seq               int
	corpus            *corpus
	loadAvg           string
}

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 5, "repeat each measurement this many times and report medians")
	flag.BoolVar(&o.quick, "quick", false, "small sizes and counts, for a quick check")
	flag.StringVar(&o.caddyBin, "caddy", "bin/caddy", "Caddy built from this repository")
	flag.StringVar(&o.websockifyBin, "websockify", "/usr/bin/websockify", "websockify to compare with (empty: skip)")
	flag.StringVar(&o.template, "caddyfile", "bench/Caddyfile.tmpl", "Caddyfile template for the proxy")
	flag.StringVar(&o.outDir, "out", "bench/results", "directory for latest.json, latest.md and latest.png (empty: none)")
	flag.StringVar(&o.variants, "variants", strings.Join(columnNames(), ","), "comma-separated variants to measure")
	flag.IntVar(&o.downMiB, "down", 256, "MiB per target-to-browser throughput run")
	flag.IntVar(&o.pairs, "pairs", 3, "per run of a column that has them, target-to-browser runs paired with its reference columns' in the same proxy process")
	flag.IntVar(&o.upMiB, "up", 256, "MiB per browser-to-target throughput run")
	flag.IntVar(&o.websockifyMiB, "websockify-mib", 128, "cap on MiB per throughput run through websockify (it is slow)")
	flag.IntVar(&o.rttCount, "rtt", 2000, "echo round trips per run")
	flag.IntVar(&o.idleSessions, "sessions", 10000, "idle sessions for the memory measurement")
	flag.IntVar(&o.wsIdleSessions, "websockify-sessions", 200, "idle sessions through websockify (a process each)")
	flag.IntVar(&o.openers, "openers", 8, "concurrent session openers")
	flag.DurationVar(&o.openDuration, "open-duration", 2*time.Second, "how long to open sessions per run")
	flag.StringVar(&o.cmdline, "cmdline", "", "the command to record in the results (default: this program's arguments)")
	flag.StringVar(&o.profileDir, "profile", "", "instead of the table: profile vnc_proxy under load and write pprof files here")
	flag.IntVar(&o.profileSeconds, "profile-seconds", 10, "seconds per CPU profile")
	flag.StringVar(&o.profileVariant, "profile-variant", vOurs, "with -profile: the vnc_proxy column to profile (e.g. "+vOursRec+")")
	flag.StringVar(&o.relayListen, "relay-listen", "", "internal: run as the tcp_relay variant's process, listening here")
	flag.StringVar(&o.relayTarget, "relay-target", "", "internal: the tcp_relay variant's target")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configs, logs) for a look afterwards")
	flag.StringVar(&o.targetListen, "target-listen", "", "internal: run as the VNC server stand-in, listening here")
	flag.IntVar(&o.targetAliases, "target-aliases", 0, "internal: the stand-in also listens on this many loopback addresses 127.1.x.y at its port")
	flag.StringVar(&o.framedListen, "target-framed-listen", "", "internal: the stand-in also serves as a VNC server that frames its stream (loadtarget's Framed) here")
	flag.StringVar(&o.spiceListen, "spice-listen", "", "internal: run as the SPICE stand-in, listening here")
	flag.Parse()
	if o.targetListen != "" {
		if err := serveTarget(o.targetListen, o.targetAliases, o.framedListen); err != nil {
			fmt.Fprintln(os.Stderr, "vncbench target:", err)
			os.Exit(1)
		}
		return
	}
	if o.spiceListen != "" {
		if err := serveSPICE(o.spiceListen); err != nil {
			fmt.Fprintln(os.Stderr, "vncbench SPICE stand-in:", err)
			os.Exit(1)
		}
		return
	}
	if o.relayListen != "" {
		if err := serveRelay(o.relayListen, o.relayTarget); err != nil {
			fmt.Fprintln(os.Stderr, "vncbench relay:", err)
			os.Exit(1)
		}
		return
	}
	if o.quick {
		setIfUnset := func(name string, set func()) {
			seen := false
			flag.Visit(func(f *flag.Flag) { seen = seen || f.Name == name })
			if !seen {
				set()
			}
		}
		setIfUnset("runs", func() { o.runs = 2 })
		setIfUnset("down", func() { o.downMiB = 32 })
		setIfUnset("up", func() { o.upMiB = 32 })
		setIfUnset("websockify-mib", func() { o.websockifyMiB = 16 })
		setIfUnset("rtt", func() { o.rttCount = 500 })
		setIfUnset("sessions", func() { o.idleSessions = 1000 })
		setIfUnset("websockify-sessions", func() { o.wsIdleSessions = 50 })
		setIfUnset("open-duration", func() { o.openDuration = 500 * time.Millisecond })
	}
	if o.cmdline == "" {
		o.cmdline = strings.Join(os.Args, " ")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vncbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	// The proxy holds two sockets per session; the limit is inherited.
	lim, err := raiseNoFile(uint64(2*o.idleSessions + 1024))
	if err != nil {
		return fmt.Errorf("raising RLIMIT_NOFILE: %w", err)
	}
	o.requestedSessions = o.idleSessions
	o.fdLimit = lim
	if fit := (int(lim) - 128) / 2 / 100 * 100; fit < o.idleSessions {
		fmt.Fprintf(os.Stderr, "vncbench: RLIMIT_NOFILE is %d and cannot be raised: measuring %d idle sessions instead of %d\n", lim, fit, o.idleSessions)
		o.idleSessions = fit
	}

	dir, err := os.MkdirTemp("", "vncbench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "vncbench: keeping", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	env := &benchEnv{opts: o, dir: dir, caddyfileTemplate: o.template}
	env.caddyRoots = &rootCA{path: filepath.Join(dir, "caddy-storage", "pki", "authorities", "local", "root.crt")}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		env.loadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	variants, err := selectVariants(o, env)
	if err != nil {
		return err
	}

	// The VNC server stand-in, in processes of their own so that their
	// sockets do not count against this one's limit. Idle sessions are
	// spread over several: loadtarget's echo splices through a pipe, three
	// descriptors per session.
	// A serial column needs a target address per console: each process
	// also listens on loopback aliases (127.1.x.y) at its port.
	aliases := 0
	framed, needSPICE := false, false
	for _, c := range env.columns {
		switch c.target {
		case serialTarget:
			aliases = (o.idleSessions + targetProcesses - 1) / targetProcesses
		case framedTarget:
			framed = true
		case spiceTarget:
			needSPICE = true
		}
	}
	for range targetProcesses {
		target, err := startTarget(ctx, env, aliases, framed)
		if err != nil {
			return err
		}
		defer target.stop()
	}
	if needSPICE {
		// One process: a SPICE console's channels must reach the same
		// server (the session id is the server's).
		p, err := startSPICE(ctx, env)
		if err != nil {
			return err
		}
		defer p.stop()
	}
	env.targetAddr = env.targetAddrs[0]

	if err := writeTokenFile(env); err != nil {
		return err
	}
	maxMiB := max(o.downMiB, o.upMiB)
	env.corpus = &corpus{data: make([]byte, maxMiB<<20)}
	loadtarget.Stream(env.corpus.data, 0)

	if o.profileDir != "" {
		return profile(ctx, env)
	}

	res := newResults(o, variants)
	for r := 1; r <= o.runs; r++ {
		for _, v := range variants {
			fmt.Fprintf(os.Stderr, "run %d/%d: %s\n", r, o.runs, v)
			// A run that fails (websockify now and then drops the end of
			// a stream when the target closes) is repeated, twice at
			// most, with a fresh proxy; only whole runs count.
			for attempt := 1; ; attempt++ {
				run := newResults(o, variants)
				err := measureVariant(ctx, env, v, run)
				if err == nil {
					res.merge(run)
					break
				}
				if attempt == 3 || ctx.Err() != nil {
					return fmt.Errorf("%s, run %d: %w", v, r, err)
				}
				why := fmt.Sprintf("%s, run %d: %v", variantLabel[v], r, err)
				fmt.Fprintf(os.Stderr, "  failed (%v); repeating the run\n", err)
				res.repeated = append(res.repeated, why)
			}
		}
	}
	res.machine = describeMachine(env)
	rep := res.report()
	fmt.Println(rep.text())
	if o.outDir != "" {
		if err := rep.write(o.outDir); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s/latest.{json,md,png}\n", o.outDir)
	}
	return nil
}

// tokensFor returns the tokens of col's target processes.
func (env *benchEnv) tokensFor(col column) []string {
	switch col.target {
	case serialTarget:
		return env.serialTokens
	case framedTarget:
		return env.framedTokens
	case spiceTarget:
		return env.spiceTokens
	}
	return env.tokens
}

func selectVariants(o options, env *benchEnv) ([]string, error) {
	want := map[string]bool{}
	for _, v := range strings.Split(o.variants, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if _, ok := columnByName(v); !ok {
			return nil, fmt.Errorf("unknown variant %q (have %s)", v, strings.Join(columnNames(), ", "))
		}
		want[v] = true
	}
	if want[vWebsockify] && o.websockifyBin == "" {
		delete(want, vWebsockify)
	}
	if want[vWebsockify] {
		p, err := exec.LookPath(o.websockifyBin)
		if err != nil {
			return nil, fmt.Errorf("websockify not found (Debian package websockify; or -websockify '' to skip): %w", err)
		}
		env.websockifyBin = p
	}
	var out []string
	needCaddy := o.profileDir != ""
	for _, c := range columns {
		if want[c.name] {
			out = append(out, c.name)
			env.columns = append(env.columns, c)
			needCaddy = needCaddy || c.proxy == caddyProxy
		}
	}
	if needCaddy {
		p, err := filepath.Abs(o.caddyBin)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("caddy binary: %w (go build -o bin/caddy ./cmd/caddy)", err)
		}
		env.caddyBin = p
	}
	return out, nil
}

// writeTokenFile writes a websockify-format token file with a hundred
// unrelated tokens and one for each target process, Framed target and
// SPICE stand-in, and one for the serial column with a token per serial
// stand-in address.
func writeTokenFile(env *benchEnv) error {
	newToken := func() string {
		var k [16]byte
		rand.Read(k[:])
		return hex.EncodeToString(k[:])
	}
	var b strings.Builder
	b.WriteString("# vncbench tokens\n")
	for range 100 {
		fmt.Fprintf(&b, "%s: 127.0.0.1:1\n", newToken())
	}
	for _, addr := range env.targetAddrs {
		tok := newToken()
		env.tokens = append(env.tokens, tok)
		fmt.Fprintf(&b, "%s: %s\n", tok, addr)
	}
	env.token = env.tokens[0]
	for _, addr := range env.framedAddrs {
		tok := newToken()
		env.framedTokens = append(env.framedTokens, tok)
		fmt.Fprintf(&b, "%s: %s\n", tok, addr)
	}
	for _, addr := range env.spiceAddrs {
		tok := newToken()
		env.spiceTokens = append(env.spiceTokens, tok)
		fmt.Fprintf(&b, "%s: %s\n", tok, addr)
	}
	env.tokenFile = filepath.Join(env.dir, "tokens")
	if err := os.WriteFile(env.tokenFile, []byte(b.String()), 0o600); err != nil {
		return err
	}
	b.Reset()
	b.WriteString("# vncbench serial tokens\n")
	for _, addr := range env.serialAddrs {
		tok := newToken()
		env.serialTokens = append(env.serialTokens, tok)
		fmt.Fprintf(&b, "%s: %s\n", tok, addr)
	}
	env.serialTokenFile = filepath.Join(env.dir, "serial-tokens")
	return os.WriteFile(env.serialTokenFile, []byte(b.String()), 0o600)
}

// measureVariant runs every measurement once against a freshly started
// proxy, memory first so that the baseline is a proxy that has not yet
// relayed much.
func measureVariant(ctx context.Context, env *benchEnv, v string, res *results) error {
	o := env.opts
	col, _ := columnByName(v)
	var pp *proxyProc
	var err error
	switch col.proxy {
	case caddyProxy:
		pp, err = startCaddy(ctx, env, env.columns)
	case websockifyProxy:
		pp, err = startWebsockify(ctx, env)
	case relayProxy:
		pp, err = startRelay(ctx, env)
	}
	if err != nil {
		return err
	}
	tokens := env.tokensFor(col)
	if len(tokens) == 0 {
		return fmt.Errorf("no target addresses for %s", col.label)
	}
	// Idle sessions spread over the tokens, one console each.
	var idleDials []dialFunc
	for _, tok := range tokens {
		idleDials = append(idleDials, col.dial(env, pp, tok, 1024))
	}
	dial := col.dial(env, pp, tokens[0], 64<<10)
	if col.target == serialTarget {
		// Each console a target of its own, as the proxy refuses a
		// second one for a target still in use: the next measurement
		// may open before the last one's console has ended.
		var d []dialFunc
		for _, tok := range tokens {
			d = append(d, col.dial(env, pp, tok, 64<<10))
		}
		dial = rotate(d)
	}
	pid := 0
	idleN := o.idleSessions
	limitMiB := int64(1 << 40)
	switch {
	case col.proxy == websockifyProxy:
		idleN = o.wsIdleSessions
		limitMiB = int64(o.websockifyMiB)
	case col.target == serialTarget:
		idleN = min(idleN, len(tokens))
	}
	if col.conns > 1 {
		// As many connections as for the other columns.
		idleN /= col.conns
	}
	if col.files > 0 {
		// As many descriptors as for the other columns.
		idleN = idleN * 2 / (2 + col.files)
	}
	if pp != nil {
		defer pp.proc.stop()
		pid = pp.proc.pid()
		if err := waitSession(ctx, dial, pp); err != nil {
			return err
		}
	}

	var base procSample
	if pid != 0 {
		time.Sleep(500 * time.Millisecond) // the probe session's teardown
		base, _ = sampleTree(pid)
	}
	// The relay splices through pipes, six descriptors per session: too
	// many for thousands of idle sessions, and not the point of it.
	if pid != 0 && col.idle && col.measures(mIdle) {
		ir, err := measureIdle(ctx, idleDials, idleN, pid)
		if err != nil {
			return fmt.Errorf("idle sessions: %w", err)
		}
		res.add(mIdle, v, ir.perKiB)
		res.idle[v] = append(res.idle[v], ir)
		fmt.Fprintf(os.Stderr, "  idle: %d sessions, %.1f KiB each, %d answered\n", ir.sessions, ir.perKiB, ir.answered)
		waitSettled(ctx, pid, base, 60*time.Second)
	}

	var before procSample
	var rate, p50, p99, dmb, umb float64
	if col.measures(mOpen) {
		if pid != 0 {
			before = waitSettled(ctx, pid, base, 30*time.Second)
		}
		var opened int64
		rate, opened, err = measureOpenRate(ctx, dial, o.openers, o.openDuration)
		if err != nil {
			return fmt.Errorf("open rate: %w", err)
		}
		res.add(mOpen, v, rate)
		if pid != 0 {
			after := waitSettled(ctx, pid, base, 30*time.Second)
			res.add(mOpenCPU, v, (after.cpuSeconds-before.cpuSeconds)/float64(opened)*1e6)
		}
	}

	if col.measures(mRTT50) {
		if pid != 0 {
			waitSettled(ctx, pid, base, 30*time.Second)
		}
		p50, p99, err = measureRTT(ctx, dial, o.rttCount)
		if err != nil {
			return fmt.Errorf("round trip: %w", err)
		}
		res.add(mRTT50, v, p50)
		res.add(mRTT99, v, p99)
	}

	if col.measures(mDown) {
		down := min(int64(o.downMiB), limitMiB) << 20
		up := min(int64(o.upMiB), limitMiB) << 20
		var cpu0, cpu1, cpu2 procSample
		if pid != 0 {
			cpu0 = waitSettled(ctx, pid, base, 30*time.Second)
		}
		dmb, err = measureDown(ctx, dial, down, env.corpus)
		if err != nil {
			return fmt.Errorf("target to browser: %w", err)
		}
		res.add(mDown, v, dmb)
		if pid != 0 {
			cpu1 = waitSettled(ctx, pid, base, 30*time.Second)
		}
		umb, err = measureUp(ctx, dial, up, env.corpus)
		if err != nil {
			return fmt.Errorf("browser to target: %w", err)
		}
		res.add(mUp, v, umb)
		if pid != 0 {
			cpu2 = waitSettled(ctx, pid, base, 30*time.Second)
			gb := float64(down+up) / 1e9
			res.add(mCPU, v, (cpu2.cpuSeconds-cpu0.cpuSeconds)/gb)
			res.addExtra("cpu_s_per_gb_down", v, (cpu1.cpuSeconds-cpu0.cpuSeconds)/(float64(down)/1e9))
			res.addExtra("cpu_s_per_gb_up", v, (cpu2.cpuSeconds-cpu1.cpuSeconds)/(float64(up)/1e9))
		}
	}
	fmt.Fprintf(os.Stderr, "  open %.0f/s, rtt p50 %.0f µs p99 %.0f µs, down %.0f MB/s, up %.0f MB/s\n", rate, p50, p99, dmb, umb)

	if col.paired && col.measures(mDown) && pid != 0 && o.pairs > 0 {
		down := min(int64(o.downMiB), limitMiB) << 20
		for _, ref := range col.compare {
			rc, ok := env.column(ref)
			if !ok || rc.proxy != caddyProxy || rc.https != "" {
				continue
			}
			r, err := pairedDown(ctx, env, pid, base, rc.dial(env, pp, env.tokensFor(rc)[0], 64<<10), dial, down, o.pairs)
			if err != nil {
				return fmt.Errorf("paired with %s: %w", rc.label, err)
			}
			res.addExtra(pairedKey(ref), v, r)
			fmt.Fprintf(os.Stderr, "  down against %s, paired: %.2f×\n", rc.label, r)
		}
	}
	return nil
}

// pairedDown measures target→browser throughput through two routes of the
// same proxy process back to back, n times, alternating which goes first,
// and returns the median of the ratios col/ref. Columns measured minutes
// apart, each with a proxy of its own, differ by as much as a quarter on a
// small, shared machine whatever they relay; a pair taken within a second
// or two sees the same machine.
func pairedDown(ctx context.Context, env *benchEnv, pid int, base procSample, ref, col dialFunc, down int64, n int) (float64, error) {
	var ratios []float64
	for i := range n {
		var mb [2]float64
		for j := range 2 {
			k := (i + j) % 2 // 0: ref, 1: col
			d := ref
			if k == 1 {
				d = col
			}
			waitSettled(ctx, pid, base, 30*time.Second)
			v, err := measureDown(ctx, d, down, env.corpus)
			if err != nil {
				return 0, err
			}
			mb[k] = v
		}
		ratios = append(ratios, mb[1]/mb[0])
	}
	return median(ratios), nil
}

// pairedKey is the extra of pairedDown's ratio against ref.
func pairedKey(ref string) string { return "paired_down_ratio_vs_" + ref }

// waitSession waits until a session through the proxy works (Caddy may
// still be issuing its internal certificate).
func waitSession(ctx context.Context, dial dialFunc, pp *proxyProc) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := openSession(ctx, dial, nil)
		if err == nil {
			s.Close()
			return nil
		}
		if pp.proc.exited() {
			return fmt.Errorf("%s exited:\n%s", pp.proc.name, pp.proc.logTail())
		}
		if time.Now().After(deadline) || errors.Is(err, context.Canceled) {
			return fmt.Errorf("no working session through %s: %w\n%s", pp.proc.name, err, pp.proc.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
