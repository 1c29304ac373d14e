package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/loadtarget"
	"github.com/vncgate/caddy-vnc-proxy/internal/spice"
)

// process is a program the harness started, in its own process group so that
// stopping it also stops the children it forks (websockify forks one per
// session).
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func startProcess(name, logPath string, env []string, argv ...string) (*process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM to the process group, then SIGKILL if it has not ended
// within a few seconds, and waits for the leader to be reaped.
func (p *process) stop() {
	pgid := p.pid()
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	// Forked children that outlived the leader.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail returns the last lines of the process's output, for error messages.
func (p *process) logTail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitDial(ctx context.Context, p *process, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited:\n%s", p.name, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing accepts on %s after %v: %w", addr, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// caddyConfig fills the Caddyfile template and the columns' snippets.
type caddyConfig struct {
	Dir             string // the harness's temporary directory, for files a route writes
	Admin           string
	Storage         string
	HTTPPort        int
	HTTPSPort       int
	NativePort      int
	TokenFile       string
	SerialTokenFile string
	Password        string

	// The columns' snippets, filled in: in the global options, the
	// plain-HTTP site and the HTTPS site.
	Global, HTTP, HTTPS string
}

// startCaddy starts bin/caddy with the Caddyfile template and the snippets
// of cols: plain ws on one port, wss with `tls internal` on another, the
// native listener on a third, admin (and pprof) on a fourth.
func startCaddy(ctx context.Context, env *benchEnv, cols []column) (*proxyProc, error) {
	var ports [4]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	httpPort, httpsPort, nativePort, adminPort := ports[0], ports[1], ports[2], ports[3]
	cfg := caddyConfig{
		Dir:             env.dir,
		Admin:           fmt.Sprintf("127.0.0.1:%d", adminPort),
		Storage:         filepath.Join(env.dir, "caddy-storage"),
		HTTPPort:        httpPort,
		HTTPSPort:       httpsPort,
		NativePort:      nativePort,
		TokenFile:       env.tokenFile,
		SerialTokenFile: env.serialTokenFile,
		Password:        targetPassword,
	}
	var err error
	if cfg.Global, cfg.HTTP, cfg.HTTPS, err = snippets(cols, cfg); err != nil {
		return nil, err
	}
	tmpl, err := template.ParseFiles(env.caddyfileTemplate)
	if err != nil {
		return nil, fmt.Errorf("reading Caddyfile template: %w", err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, cfg); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(env.dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, buf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	env.seq++
	p, err := startProcess("caddy", filepath.Join(env.dir, fmt.Sprintf("caddy-%d.log", env.seq)),
		[]string{
			"XDG_DATA_HOME=" + filepath.Join(env.dir, "xdg-data"),
			"XDG_CONFIG_HOME=" + filepath.Join(env.dir, "xdg-config"),
			"HOME=" + env.dir,
			// Go's HTTP/2 server offers extended CONNECT (the HTTP/2 variant).
			"GODEBUG=http2xconnect=1",
		},
		env.caddyBin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	if err != nil {
		return nil, err
	}
	pp := &proxyProc{
		proc:       p,
		httpPort:   httpPort,
		httpsPort:  httpsPort,
		wsBase:     fmt.Sprintf("ws://127.0.0.1:%d/websockify?token=", httpPort),
		wssBase:    fmt.Sprintf("wss://127.0.0.1:%d/websockify?token=", httpsPort),
		nativeAddr: fmt.Sprintf("127.0.0.1:%d", nativePort),
		adminAddr:  fmt.Sprintf("127.0.0.1:%d", adminPort),
	}
	for _, port := range []int{httpPort, httpsPort} {
		if err := waitDial(ctx, p, fmt.Sprintf("127.0.0.1:%d", port), 60*time.Second); err != nil {
			p.stop()
			return nil, err
		}
	}
	return pp, nil
}

// snippets fills in the Caddyfile snippets of cols, each once (columns
// that share a route give the same snippet).
func snippets(cols []column, cfg caddyConfig) (global, http, https string, err error) {
	var seen [3]map[string]bool
	var parts [3]strings.Builder
	for _, c := range cols {
		for i, s := range []string{c.global, c.http, c.https} {
			if s == "" || seen[i][s] {
				continue
			}
			if seen[i] == nil {
				seen[i] = map[string]bool{}
			}
			seen[i][s] = true
			t, err := template.New(c.name).Parse(s)
			if err != nil {
				return "", "", "", fmt.Errorf("column %s: Caddyfile snippet: %w", c.name, err)
			}
			parts[i].WriteString("\n\t")
			if err := t.Execute(&parts[i], cfg); err != nil {
				return "", "", "", fmt.Errorf("column %s: Caddyfile snippet: %w", c.name, err)
			}
		}
	}
	return parts[0].String(), parts[1].String(), parts[2].String(), nil
}

// startWebsockify starts Debian's websockify with a TokenFile plugin.
func startWebsockify(ctx context.Context, env *benchEnv) (*proxyProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	env.seq++
	p, err := startProcess("websockify", filepath.Join(env.dir, fmt.Sprintf("websockify-%d.log", env.seq)), nil,
		env.websockifyBin, "--token-plugin", "TokenFile", "--token-source", env.tokenFile,
		fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	if err := waitDial(ctx, p, fmt.Sprintf("127.0.0.1:%d", port), 30*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return &proxyProc{
		proc:   p,
		wsBase: fmt.Sprintf("ws://127.0.0.1:%d/websockify?token=", port),
	}, nil
}

// startRelay starts this program again as a plain TCP relay: a separate
// process that copies bytes both ways with io.Copy, no WebSocket. It shows
// what any proxy process costs on this machine.
func startRelay(ctx context.Context, env *benchEnv) (*proxyProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	env.seq++
	p, err := startProcess("tcp relay", filepath.Join(env.dir, fmt.Sprintf("relay-%d.log", env.seq)), nil,
		self, "-relay-listen", addr, "-relay-target", strings.Join(env.targetAddrs, ","))
	if err != nil {
		return nil, err
	}
	if err := waitDial(ctx, p, addr, 10*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return &proxyProc{proc: p, tcpAddr: addr}, nil
}

// startTarget starts this program again as the VNC server stand-in
// (internal/loadtarget) and adds its address to env.targetAddrs, and the
// addresses of its aliases to env.serialAddrs: it also listens, at the same
// port, on that many loopback addresses 127.1.x.y.
//
// With framed, it also listens on a port of its own as a Framed load target
// (a VNC server's messages after the login), whose address goes to
// env.framedAddrs.
func startTarget(ctx context.Context, env *benchEnv, aliases int, framed bool) (*process, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	argv := []string{self, "-target-listen", addr, "-target-aliases", strconv.Itoa(aliases)}
	framedAddr := ""
	if framed {
		fp, err := freePort()
		if err != nil {
			return nil, err
		}
		framedAddr = fmt.Sprintf("127.0.0.1:%d", fp)
		argv = append(argv, "-target-framed-listen", framedAddr)
	}
	p, err := startProcess("target", filepath.Join(env.dir, fmt.Sprintf("target-%d.log", len(env.targetAddrs))), nil, argv...)
	if err != nil {
		return nil, err
	}
	if framedAddr != "" {
		if err := waitDial(ctx, p, framedAddr, 10*time.Second); err != nil {
			p.stop()
			return nil, err
		}
		env.framedAddrs = append(env.framedAddrs, framedAddr)
	}
	aliasAddrs := targetAliases(port, aliases)
	if len(aliasAddrs) > 0 {
		// The last alias listens once the process has bound them all.
		if err := waitDial(ctx, p, aliasAddrs[len(aliasAddrs)-1], 10*time.Second); err != nil {
			p.stop()
			return nil, err
		}
	}
	if err := waitDial(ctx, p, addr, 10*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	env.targetAddrs = append(env.targetAddrs, addr)
	env.serialAddrs = append(env.serialAddrs, aliasAddrs...)
	return p, nil
}

// targetAliases are the n loopback addresses 127.1.x.y at port: Linux
// routes all of 127.0.0.0/8 to the loopback interface.
func targetAliases(port, n int) []string {
	var a []string
	for i := range n {
		a = append(a, fmt.Sprintf("127.1.%d.%d:%d", i/254, i%254+1, port))
	}
	return a
}

// serveTarget serves the load target on listen and its aliases, which it
// binds first, and a Framed one on framedListen when it is set.
func serveTarget(listen string, aliases int, framedListen string) error {
	_, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return err
	}
	var ls []net.Listener
	for _, a := range targetAliases(port, aliases) {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return err
		}
		ls = append(ls, l)
	}
	if framedListen != "" {
		fl, err := net.Listen("tcp", framedListen)
		if err != nil {
			return err
		}
		go func() {
			if err := (&loadtarget.Server{Password: targetPassword, Framed: true}).Serve(fl); err != nil {
				fmt.Fprintln(os.Stderr, "vncbench target:", err)
				os.Exit(1)
			}
		}()
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	for _, al := range ls {
		go func() {
			if err := (&loadtarget.Server{Password: targetPassword}).Serve(al); err != nil {
				fmt.Fprintln(os.Stderr, "vncbench target:", err)
				os.Exit(1)
			}
		}()
	}
	return (&loadtarget.Server{Password: targetPassword}).Serve(l)
}

// startSPICE starts this program again as the SPICE stand-in
// (spice.StandIn) and adds its address to env.spiceAddrs.
func startSPICE(ctx context.Context, env *benchEnv) (*process, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startProcess("SPICE stand-in", filepath.Join(env.dir, fmt.Sprintf("spice-%d.log", len(env.spiceAddrs))), nil,
		self, "-spice-listen", addr)
	if err != nil {
		return nil, err
	}
	if err := waitDial(ctx, p, addr, 10*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	env.spiceAddrs = append(env.spiceAddrs, addr)
	return p, nil
}

// serveSPICE is the SPICE stand-in's process.
func serveSPICE(listen string) error {
	s, err := spice.NewStandIn()
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

// serveRelay is the tcp_relay variant's process. It spreads connections
// over the comma-separated targets, as the proxies do by token.
func serveRelay(listen, targets string) error {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	addrs := strings.Split(targets, ",")
	for i := 0; ; i++ {
		target := addrs[i%len(addrs)]
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			t, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer t.Close()
			go func() {
				_, _ = io.Copy(t, c)
				t.(*net.TCPConn).CloseWrite()
			}()
			_, _ = io.Copy(c, t)
		}()
	}
}

// proxyProc is a running proxy and where to reach it.
type proxyProc struct {
	proc       *process
	tcpAddr    string
	httpPort   int    // Caddy's plain-HTTP site
	httpsPort  int    // Caddy's HTTPS site
	wsBase     string // the /websockify route's URL up to the token
	wssBase    string
	nativeAddr string // Caddy's native listener
	adminAddr  string
}

// idleDials returns a dialer per token, small buffers: the idle sessions
// spread over the target processes.
func (pp *proxyProc) idleDials(base string, tokens []string) []dialFunc {
	var d []dialFunc
	for _, t := range tokens {
		d = append(d, dialWS(base+t, 1024))
	}
	return d
}

// procSample is what /proc says about a process and its descendants.
type procSample struct {
	cpuSeconds float64 // user+sys, including reaped children
	pssKiB     int64   // proportional set size, summed over the tree
	rssKiB     int64
	procs      int
	sockets    int
	files      int // regular files open
}

// waitSettled waits, at most timeout, until the proxy's process tree holds
// no more processes and descriptors than in base (plus a little slack): the
// sessions of the last measurement are torn down and, for websockify, their
// processes reaped, so that neither their work nor their CPU time spills into
// the next measurement.
func waitSettled(ctx context.Context, pid int, base procSample, timeout time.Duration) procSample {
	deadline := time.Now().Add(timeout)
	var last procSample
	for i := 0; ; i++ {
		s, err := sampleTree(pid)
		if err != nil {
			return s
		}
		// Settled: no more processes, sockets or open files than at the
		// start (a recorded console's files stay open until its
		// recording is synced, whose writes to the disk cost no CPU
		// time of the proxy's while it waits but would spill into the
		// next measurement), and no CPU time still arriving (a reaped
		// child's time moves to its parent when the parent gets round
		// to it).
		if i > 0 && s.procs <= base.procs && s.sockets <= base.sockets+4 && s.files <= base.files && s.cpuSeconds == last.cpuSeconds {
			return s
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "  (proxy not settled after %v: %d processes, %d sockets, %d files)\n", timeout, s.procs, s.sockets, s.files)
			return s
		}
		last = s
		select {
		case <-ctx.Done():
			return s
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// countDescriptors counts pid's open sockets and the regular files it has
// open (a recorded console's files, from its start until its recording is
// synced and closed); pipes (Go's splice keeps a pool of them) and devices
// do not matter here.
func countDescriptors(pid int) (sockets, files int) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		switch {
		case err != nil:
		case strings.HasPrefix(l, "socket:"):
			sockets++
		case strings.HasPrefix(l, "/") && !strings.HasPrefix(l, "/dev/"):
			files++
		}
	}
	return sockets, files
}

const clockTicks = 100 // USER_HZ on Linux

// sampleTree reads CPU time and memory of pid and every live descendant.
func sampleTree(pid int) (procSample, error) {
	pids, err := descendants(pid)
	if err != nil {
		return procSample{}, err
	}
	var s procSample
	for i, p := range pids {
		f, err := statFields(p)
		if err != nil {
			if i == 0 {
				return procSample{}, err
			}
			continue // a child that ended meanwhile: its time moves to the parent's cutime
		}
		// utime stime cutime cstime are fields 14-17; f starts at field 3.
		var ticks int64
		for _, k := range []int{14, 15, 16, 17} {
			v, _ := strconv.ParseInt(f[k-3], 10, 64)
			ticks += v
		}
		s.cpuSeconds += float64(ticks) / clockTicks
		pss, rss := smapsRollup(p)
		s.pssKiB += pss
		s.rssKiB += rss
		s.procs++
		sockets, files := countDescriptors(p)
		s.sockets += sockets
		s.files += files
	}
	return s, nil
}

// statFields returns /proc/pid/stat from field 3 (state) on.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, errors.New("malformed stat")
	}
	return strings.Fields(string(b[i+1:])), nil
}

func descendants(root int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(pid)
		if err != nil || len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out, nil
}

func smapsRollup(pid int) (pss, rss int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "Pss:":
			pss = v
		case "Rss:":
			rss = v
		}
	}
	return pss, rss
}

// raiseNoFile raises RLIMIT_NOFILE as far as allowed; children inherit it.
func raiseNoFile(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	// Root may raise the hard limit too.
	nl := syscall.Rlimit{Cur: want, Max: max(want, lim.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl); err == nil {
		return want, nil
	}
	nl = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl); err != nil {
		return lim.Cur, err
	}
	return lim.Max, nil
}
