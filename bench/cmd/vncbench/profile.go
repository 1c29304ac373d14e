package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// profile starts vnc_proxy with the admin endpoint and, under each load
// on the -profile-variant column's route,
// fetches pprof profiles from it and counts allocations per message from
// /debug/vars.
func profile(ctx context.Context, env *benchEnv) error {
	o := env.opts
	if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
		return err
	}
	col, ok := columnByName(o.profileVariant)
	if !ok || col.proxy != caddyProxy {
		return fmt.Errorf("-profile-variant %q: not a vnc_proxy column", o.profileVariant)
	}
	cols := []column{mustColumn(vOurs), mustColumn(vOursTLS)}
	if col.name != vOurs && col.name != vOursTLS {
		cols = append(cols, col)
	}
	pp, err := startCaddy(ctx, env, cols)
	if err != nil {
		return err
	}
	defer pp.proc.stop()
	tokens := env.tokensFor(col)
	dial := col.dial(env, pp, tokens[0], 64<<10)
	if err := waitSession(ctx, dial, pp); err != nil {
		return err
	}
	// Once a wss:// session works, Caddy has issued its internal
	// certificate, whose allocations would otherwise land in the figures.
	if err := waitSession(ctx, dialWS(pp.wssBase+env.token, 64<<10), pp); err != nil {
		return err
	}
	admin := "http://" + pp.adminAddr
	var summary strings.Builder

	// Allocations per relayed message, each direction: a session moving
	// one message and one moving n bytes, so that the session's own setup
	// cancels out. The allocs profiles around each transfer show where
	// (go tool pprof -sample_index=alloc_space -base).
	if err := fetch(admin+"/debug/pprof/allocs", filepath.Join(o.profileDir, "allocs-0.pprof")); err != nil {
		return err
	}
	for _, dir := range []string{"down", "up"} {
		n := int64(o.downMiB) << 20
		if dir == "up" {
			n = int64(o.upMiB) << 20
		}
		var mallocs, bytes [2]uint64
		var msgs [2]int64
		for i, size := range []int64{64 << 10, n} {
			before, err := memstats(admin)
			if err != nil {
				return err
			}
			if msgs[i], err = transferCounting(ctx, dial, dir, size, env); err != nil {
				return err
			}
			after, err := memstats(admin)
			if err != nil {
				return err
			}
			mallocs[i], bytes[i] = after.Mallocs-before.Mallocs, after.TotalAlloc-before.TotalAlloc
		}
		if err := fetch(admin+"/debug/pprof/allocs", filepath.Join(o.profileDir, "allocs-"+dir+".pprof")); err != nil {
			return err
		}
		dm := float64(msgs[1] - msgs[0])
		line := fmt.Sprintf("%s: %d MiB in %d messages: %.2f mallocs/message, %.0f bytes allocated/message (session setup and teardown: %d mallocs, %d bytes)",
			dir, n>>20, msgs[1], (float64(mallocs[1])-float64(mallocs[0]))/dm,
			(float64(bytes[1])-float64(bytes[0]))/dm, mallocs[0], bytes[0])
		fmt.Fprintln(os.Stderr, line)
		summary.WriteString(line + "\n")
	}

	// Allocations and CPU per session open (upgrade, lookup, dial,
	// greeting, close).
	{
		before, err := memstats(admin)
		if err != nil {
			return err
		}
		cpu0, _ := sampleTree(pp.proc.pid())
		_, opened, err := measureOpenRate(ctx, dial, o.openers, 3*time.Second)
		if err != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
		cpu1, _ := sampleTree(pp.proc.pid())
		after, err := memstats(admin)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("open: %d sessions: %.0f mallocs/session, %.0f bytes allocated/session, %.0f µs CPU/session",
			opened, float64(after.Mallocs-before.Mallocs)/float64(opened),
			float64(after.TotalAlloc-before.TotalAlloc)/float64(opened),
			(cpu1.cpuSeconds-cpu0.cpuSeconds)/float64(opened)*1e6)
		fmt.Fprintln(os.Stderr, line)
		summary.WriteString(line + "\n")
	}

	// CPU profiles under continuous load.
	loads := []struct {
		name string
		run  func(ctx context.Context) error
	}{
		{"down", func(ctx context.Context) error {
			_, err := measureDown(ctx, dial, int64(o.downMiB)<<20, env.corpus)
			return err
		}},
		{"up", func(ctx context.Context) error {
			n := int64(o.upMiB) << 20
			_, err := measureUp(ctx, dial, n, env.corpus)
			return err
		}},
		{"echo", func(ctx context.Context) error {
			_, _, err := measureRTT(ctx, dial, 20000)
			return err
		}},
		{"open", func(ctx context.Context) error {
			_, _, err := measureOpenRate(ctx, dial, o.openers, time.Second)
			return err
		}},
	}
	for _, l := range loads {
		file := filepath.Join(o.profileDir, "cpu-"+l.name+".pprof")
		fmt.Fprintf(os.Stderr, "CPU profile under %s load, %ds\n", l.name, o.profileSeconds)
		if err := underLoad(ctx, l.run, func() error {
			return fetch(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", admin, o.profileSeconds), file)
		}); err != nil {
			return fmt.Errorf("%s: %w", l.name, err)
		}
	}

	// Heap and goroutines with idle sessions open.
	before, _ := sampleTree(pp.proc.pid())
	done := make(chan idleResult, 1)
	hold := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		var idleDials []dialFunc
		for _, tok := range tokens {
			idleDials = append(idleDials, col.dial(env, pp, tok, 1024))
		}
		ir, err := holdIdle(ctx, idleDials, o.idleSessions, hold, func() {
			errc <- nil
		})
		if err != nil {
			errc <- err
		}
		done <- ir
	}()
	if err := <-errc; err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	loaded, _ := sampleTree(pp.proc.pid())
	ms, _ := memstats(admin)
	for _, p := range []string{"heap", "goroutine"} {
		if err := fetch(admin+"/debug/pprof/"+p, filepath.Join(o.profileDir, p+"-idle.pprof")); err != nil {
			return err
		}
	}
	line := fmt.Sprintf("idle: %d sessions: PSS %.1f → %.1f MiB (%.1f KiB/session); Go heap in use %.1f MiB, stacks %.1f MiB, goroutines see goroutine-idle.pprof",
		o.idleSessions, float64(before.pssKiB)/1024, float64(loaded.pssKiB)/1024,
		float64(loaded.pssKiB-before.pssKiB)/float64(o.idleSessions),
		float64(ms.HeapInuse)/(1<<20), float64(ms.StackInuse)/(1<<20))
	close(hold)
	<-done
	fmt.Fprintln(os.Stderr, line)
	summary.WriteString(line + "\n")
	if err := os.WriteFile(filepath.Join(o.profileDir, "summary.txt"), []byte(summary.String()), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote profiles to %s; e.g. go tool pprof -top %s %s\n", o.profileDir, env.caddyBin, filepath.Join(o.profileDir, "cpu-down.pprof"))
	return nil
}

// underLoad runs load repeatedly until measure returns.
func underLoad(ctx context.Context, load func(context.Context) error, measure func() error) error {
	lctx, cancel := context.WithCancel(ctx)
	loadErr := make(chan error, 1)
	go func() {
		for lctx.Err() == nil {
			if err := load(lctx); err != nil && lctx.Err() == nil {
				loadErr <- err
				return
			}
		}
		loadErr <- nil
	}()
	err := measure()
	cancel()
	if lerr := <-loadErr; lerr != nil && err == nil {
		err = lerr
	}
	return err
}

// transferCounting moves n bytes one way and returns how many WebSocket
// messages carried them.
func transferCounting(ctx context.Context, dial dialFunc, dir string, n int64, env *benchEnv) (int64, error) {
	if dir == "up" {
		if _, err := measureUp(ctx, dial, n, env.corpus); err != nil {
			return 0, err
		}
		return (n + 64<<10 - 1) / (64 << 10), nil
	}
	s, err := openSession(ctx, dial, nil)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	if err := s.send(sizedCommand('s', n)); err != nil {
		return 0, err
	}
	ws, ok := s.(wsStream)
	if !ok {
		// A framed stream: counted as its target sends it, in 64 KiB
		// FramebufferUpdates.
		if _, err := io.CopyN(io.Discard, s, n); err != nil {
			return 0, err
		}
		return (n + 64<<10 - 1) / (64 << 10), nil
	}
	var msgs int64
	for got := int64(0); got < n; {
		_, r, err := ws.Conn.NextReader()
		if err != nil {
			return 0, err
		}
		k, err := io.Copy(io.Discard, r)
		if err != nil {
			return 0, err
		}
		got += k
		msgs++
	}
	return msgs, nil
}

// holdIdle opens n echo sessions, calls opened, and keeps them until hold
// is closed.
func holdIdle(ctx context.Context, dials []dialFunc, n int, hold chan struct{}, opened func()) (idleResult, error) {
	sessions := make([]stream, 0, n)
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	for i := range n {
		s, err := openSession(ctx, dials[i%len(dials)], []byte{'e'})
		if err != nil {
			return idleResult{}, err
		}
		s.setDeadline(time.Time{})
		sessions = append(sessions, s)
	}
	opened()
	<-hold
	return idleResult{sessions: n}, nil
}

type goMemStats struct {
	Mallocs    uint64
	TotalAlloc uint64
	HeapInuse  uint64
	StackInuse uint64
}

func memstats(admin string) (goMemStats, error) {
	resp, err := http.Get(admin + "/debug/vars")
	if err != nil {
		return goMemStats{}, err
	}
	defer resp.Body.Close()
	var v struct {
		Memstats goMemStats `json:"memstats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return goMemStats{}, fmt.Errorf("reading /debug/vars: %w", err)
	}
	return v.Memstats, nil
}

func fetch(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
