package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Metric keys.
const (
	mDown    = "down_mb_s"
	mUp      = "up_mb_s"
	mRTT50   = "rtt_p50_us"
	mRTT99   = "rtt_p99_us"
	mIdle    = "idle_kib_per_session"
	mOpen    = "open_sessions_s"
	mCPU     = "cpu_s_per_gb"
	mOpenCPU = "cpu_us_per_open"
	notMeas  = "–"
)

type metricDef struct {
	Key          string `json:"key"`
	Title        string `json:"title"`
	Unit         string `json:"unit"`
	HigherBetter bool   `json:"higher_is_better"`
}

var metricDefs = []metricDef{
	{mDown, "target→browser throughput", "MB/s", true},
	{mUp, "browser→target throughput", "MB/s", true},
	{mRTT50, "round trip p50 (16 B echo)", "µs", false},
	{mRTT99, "round trip p99 (16 B echo)", "µs", false},
	{mIdle, "memory per idle session", "KiB", false},
	{mOpen, "session open rate", "sessions/s", true},
	{mOpenCPU, "proxy CPU per session open", "µs", false},
	{mCPU, "proxy CPU per GB relayed", "s/GB", false},
}

type results struct {
	opts     options
	variants []string
	samples  map[string]map[string][]float64 // metric → variant → per-run values
	extra    map[string]map[string][]float64
	idle     map[string][]idleResult
	machine  machine
	repeated []string // runs that failed and were repeated, and why
}

func newResults(o options, variants []string) *results {
	return &results{
		opts:     o,
		variants: variants,
		samples:  map[string]map[string][]float64{},
		extra:    map[string]map[string][]float64{},
		idle:     map[string][]idleResult{},
	}
}

// merge adds run's samples, those of one successful run, to r's.
func (r *results) merge(run *results) {
	for metric, byVariant := range run.samples {
		for v, xs := range byVariant {
			for _, x := range xs {
				r.add(metric, v, x)
			}
		}
	}
	for key, byVariant := range run.extra {
		for v, xs := range byVariant {
			for _, x := range xs {
				r.addExtra(key, v, x)
			}
		}
	}
	for v, irs := range run.idle {
		r.idle[v] = append(r.idle[v], irs...)
	}
}

func (r *results) add(metric, variant string, v float64) {
	if r.samples[metric] == nil {
		r.samples[metric] = map[string][]float64{}
	}
	r.samples[metric][variant] = append(r.samples[metric][variant], v)
}

func (r *results) addExtra(key, variant string, v float64) {
	if r.extra[key] == nil {
		r.extra[key] = map[string][]float64{}
	}
	r.extra[key][variant] = append(r.extra[key][variant], v)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type machine struct {
	CPUs       int    `json:"nproc"`
	CPUModel   string `json:"cpu_model"`
	Kernel     string `json:"kernel"`
	MemoryGiB  int    `json:"memory_gib"`
	GoVersion  string `json:"go_version"`
	LoadAvg    string `json:"load_average_at_start"`
	Commit     string `json:"commit,omitempty"`
	Caddy      string `json:"caddy,omitempty"`
	Websockify string `json:"websockify,omitempty"`
}

func describeMachine(env *benchEnv) machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	m.LoadAvg = env.loadAvg
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Fscanf(f, "MemTotal: %d kB", &kb)
		m.MemoryGiB = int((kb + 1<<19) >> 20)
		f.Close()
	}
	if env.caddyBin != "" {
		if out, err := exec.Command(env.caddyBin, "version").Output(); err == nil {
			m.Caddy = strings.Fields(string(out) + " ")[0]
		}
	}
	if env.websockifyBin != "" {
		m.Websockify = "0.10 (Debian " + debVersion("websockify") + ", /usr/bin/python3)"
	}
	return m
}

func debVersion(pkg string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
	if err != nil {
		return "?"
	}
	return string(out)
}

// cell is one metric's median for one variant.
type cell struct {
	Median  float64   `json:"median"`
	Samples []float64 `json:"samples"`
}

type row struct {
	metricDef
	Values         map[string]*cell `json:"values"`
	RatioDirect    *float64         `json:"ratio_ours_direct,omitempty"`
	RatioWebsocify *float64         `json:"ratio_ours_websockify,omitempty"`
	Target         string           `json:"target,omitempty"`
	Met            *bool            `json:"met,omitempty"`
	Miss           string           `json:"missed_by,omitempty"`
}

type idleSummary struct {
	Sessions int     `json:"sessions"`
	Answered int     `json:"answered"`
	BaseMiB  float64 `json:"baseline_pss_mib"`
	LoadMiB  float64 `json:"loaded_pss_mib"`
}

type report struct {
	Generated string                        `json:"generated"`
	Command   string                        `json:"command"`
	Machine   machine                       `json:"machine"`
	Config    map[string]any                `json:"config"`
	Variants  []string                      `json:"variants"`
	Rows      []row                         `json:"metrics"`
	Idle      map[string]idleSummary        `json:"idle_sessions"`
	Extra     map[string]map[string]float64 `json:"extra_medians"`
	// Ratios are the compare ratios of columns (see column.compare):
	// column → the other column → metric → this median / the other's.
	Ratios   map[string]map[string]map[string]float64 `json:"ratios,omitempty"`
	Repeated []string                                 `json:"repeated_runs,omitempty"`
}

func (r *results) report() *report {
	o := r.opts
	rep := &report{
		Generated: time.Now().UTC().Format(time.RFC3339),
		Command:   o.cmdline,
		Machine:   r.machine,
		Variants:  r.variants,
		Repeated:  r.repeated,
		Idle:      map[string]idleSummary{},
		Extra:     map[string]map[string]float64{},
		Config: map[string]any{
			"runs":                o.runs,
			"quick":               o.quick,
			"down_mib":            o.downMiB,
			"pairs":               o.pairs,
			"up_mib":              o.upMiB,
			"websockify_mib":      o.websockifyMiB,
			"up_message_kib":      64,
			"rtt_echoes":          o.rttCount,
			"idle_sessions":       o.idleSessions,
			"idle_sessions_asked": o.requestedSessions,
			"rlimit_nofile":       o.fdLimit,
			"websockify_sessions": o.wsIdleSessions,
			"openers":             o.openers,
			"open_duration":       o.openDuration.String(),
		},
	}
	for _, d := range metricDefs {
		rw := row{metricDef: d, Values: map[string]*cell{}}
		for _, v := range r.variants {
			if xs := r.samples[d.Key][v]; len(xs) > 0 {
				rw.Values[v] = &cell{Median: median(xs), Samples: xs}
			}
		}
		ours, direct, ws := rw.Values[vOurs], rw.Values[vDirect], rw.Values[vWebsockify]
		if ours != nil && direct != nil {
			x := ours.Median / direct.Median
			rw.RatioDirect = &x
		}
		if ours != nil && ws != nil {
			x := ours.Median / ws.Median
			rw.RatioWebsocify = &x
		}
		r.judge(&rw)
		rep.Rows = append(rep.Rows, rw)
	}
	for _, v := range r.variants {
		col, _ := columnByName(v)
		for _, other := range col.compare {
			for _, rw := range rep.Rows {
				a, b := rw.Values[v], rw.Values[other]
				if a == nil || b == nil || b.Median == 0 {
					continue
				}
				if rep.Ratios == nil {
					rep.Ratios = map[string]map[string]map[string]float64{}
				}
				if rep.Ratios[v] == nil {
					rep.Ratios[v] = map[string]map[string]float64{}
				}
				if rep.Ratios[v][other] == nil {
					rep.Ratios[v][other] = map[string]float64{}
				}
				rep.Ratios[v][other][rw.Key] = a.Median / b.Median
			}
		}
	}
	for v, irs := range r.idle {
		s := idleSummary{Sessions: irs[0].sessions, Answered: irs[0].answered}
		var base, load []float64
		for _, ir := range irs {
			s.Answered = min(s.Answered, ir.answered)
			base = append(base, float64(ir.baseKiB)/1024)
			load = append(load, float64(ir.loadedKiB)/1024)
		}
		s.BaseMiB, s.LoadMiB = median(base), median(load)
		rep.Idle[v] = s
	}
	for k, m := range r.extra {
		rep.Extra[k] = map[string]float64{}
		for v, xs := range m {
			rep.Extra[k][v] = median(xs)
		}
	}
	return rep
}

// judge sets the project's performance target for a row and whether vnc_proxy (plain ws)
// meets it.
func (r *results) judge(rw *row) {
	ours, direct, ws := rw.Values[vOurs], rw.Values[vDirect], rw.Values[vWebsockify]
	set := func(target string, ok bool, known bool) {
		rw.Target = target
		if known {
			rw.Met = &ok
		}
	}
	switch rw.Key {
	case mDown, mUp:
		known := ours != nil && direct != nil && ws != nil
		okDirect := known && ours.Median >= 0.5*direct.Median
		okWS := known && ours.Median >= 3*ws.Median
		set("≥ 50% of direct and ≥ 3× websockify", okDirect && okWS, known)
		switch {
		case known && !okDirect && !okWS:
			rw.Miss = "both"
		case known && !okDirect:
			rw.Miss = "50% of direct"
		case known && !okWS:
			rw.Miss = "3× websockify"
		}
	case mRTT50:
		known := ours != nil && direct != nil
		set("≤ direct + 25 µs", known && ours.Median <= direct.Median+25, known)
	case mIdle:
		irs := r.idle[vOurs]
		known := ours != nil && len(irs) > 0
		// A hard RLIMIT_NOFILE of 20,000 leaves room for 9,900 sessions
		// (two sockets each); that counts as the target's 10,000.
		ok := known && ours.Median <= 16 && irs[0].sessions >= 9900
		for _, ir := range irs {
			ok = ok && ir.answered == ir.sessions
		}
		set("≤ 16 KiB at 10,000 sessions, all answering", ok, known)
	case mOpen:
		known := ours != nil
		set("≥ 4,000/s", known && ours.Median >= 4000, known)
	}
}

func fmtNum(x float64) string {
	switch {
	case math.IsNaN(x):
		return notMeas
	case math.Abs(x) >= 100:
		return fmt.Sprintf("%.0f", x)
	case math.Abs(x) >= 10:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.2f", x)
	}
}

func fmtRatio(x *float64) string {
	if x == nil {
		return notMeas
	}
	return fmt.Sprintf("%.2f×", *x)
}

func (rw row) value(v string) string {
	c := rw.Values[v]
	if c == nil {
		return notMeas
	}
	return fmtNum(c.Median)
}

func (rw row) met() string {
	switch {
	case rw.Target == "":
		return ""
	case rw.Met == nil:
		return "n/a"
	case *rw.Met:
		return "met"
	case rw.Miss != "" && rw.Miss != "both":
		return "NOT met (" + rw.Miss + ")"
	default:
		return "NOT met"
	}
}

func (rep *report) header() []string {
	h := []string{"metric"}
	for _, v := range rep.Variants {
		h = append(h, variantLabel[v])
	}
	return append(h, "ours/direct", "ours/websockify", "target (vnc_proxy ws)", "")
}

func (rep *report) cells() [][]string {
	var out [][]string
	for _, rw := range rep.Rows {
		line := []string{rw.Title + " (" + rw.Unit + ")"}
		for _, v := range rep.Variants {
			line = append(line, rw.value(v))
		}
		line = append(line, fmtRatio(rw.RatioDirect), fmtRatio(rw.RatioWebsocify), rw.Target, rw.met())
		out = append(out, line)
	}
	return out
}

func (rep *report) footnotes() []string {
	var n []string
	for _, v := range rep.Variants {
		if s, ok := rep.Idle[v]; ok {
			n = append(n, fmt.Sprintf("%s: memory measured with %d idle sessions (PSS growth over the process tree, %.1f → %.1f MiB); %d of %d still answered a 1-byte echo afterwards (worst run).",
				variantLabel[v], s.Sessions, s.BaseMiB, s.LoadMiB, s.Answered, s.Sessions))
		}
	}
	if d, ok := rep.Extra["cpu_s_per_gb_down"]; ok {
		u := rep.Extra["cpu_s_per_gb_up"]
		for _, v := range rep.Variants {
			if _, ok := d[v]; ok {
				n = append(n, fmt.Sprintf("%s CPU: %.2f s/GB target→browser, %.2f s/GB browser→target.", variantLabel[v], d[v], u[v]))
			}
		}
	}
	for _, v := range rep.Variants {
		col, _ := columnByName(v)
		for _, other := range col.compare {
			if r, ok := rep.Extra[pairedKey(other)][v]; ok {
				n = append(n, fmt.Sprintf("%s / %s, paired: target→browser throughput %.2f× (in each run, the median of %v pairs of runs back to back in one proxy process, which one goes first alternating; the median of the runs').",
					variantLabel[v], variantLabel[other], r, rep.Config["pairs"]))
			}
		}
	}
	if o := rep.Config; o["idle_sessions"] != o["idle_sessions_asked"] {
		n = append(n, fmt.Sprintf("RLIMIT_NOFILE is %v here and cannot be raised, so %v idle sessions were measured instead of %v (the proxy holds two sockets per session).",
			o["rlimit_nofile"], o["idle_sessions"], o["idle_sessions_asked"]))
	}
	for _, why := range rep.Repeated {
		n = append(n, "A run failed and was repeated: "+why+".")
	}
	for _, v := range rep.Variants {
		col, _ := columnByName(v)
		for _, other := range col.compare {
			ratios := rep.Ratios[v][other]
			if len(ratios) == 0 {
				continue
			}
			var parts []string
			for _, rw := range rep.Rows {
				if x, ok := ratios[rw.Key]; ok {
					parts = append(parts, fmt.Sprintf("%s %.2f×", rw.Title, x))
				}
			}
			n = append(n, fmt.Sprintf("%s / %s: %s.", variantLabel[v], variantLabel[other], strings.Join(parts, ", ")))
		}
	}
	for _, v := range rep.Variants {
		if col, _ := columnByName(v); col.note != "" {
			n = append(n, col.note)
		}
	}
	if rep.has(vRelay) {
		n = append(n, "Go TCP relay: a separate process copying bytes both ways with io.Copy (splice), no WebSocket: what any proxy process costs on this machine. Not measured for idle sessions.")
	}
	o := rep.Config
	n = append(n, "ours = vnc_proxy over plain ws; the targets are the project's, for plain WebSocket on loopback.")
	n = append(n, fmt.Sprintf("Medians of %v runs; a fresh proxy process per run. Throughput: %v MiB down, %v MiB up in 64 KiB messages (websockify capped at %v MiB); round trip: %v echoes; open rate: %v concurrent openers for %v, each session a full WebSocket upgrade (native: the viewer's handshake, TLS included), token lookup and RFB greeting read.",
		o["runs"], o["down_mib"], o["up_mib"], o["websockify_mib"], o["rtt_echoes"], o["openers"], o["open_duration"]))
	return n
}

func (rep *report) has(v string) bool {
	for _, x := range rep.Variants {
		if x == v {
			return true
		}
	}
	return false
}

// text is the table for a terminal.
func (rep *report) text() string {
	rows := append([][]string{rep.header()}, rep.cells()...)
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, c := range r {
			pad := widths[i] - len([]rune(c))
			if i == 0 || i >= len(r)-2 {
				b.WriteString(c + strings.Repeat(" ", pad))
			} else {
				b.WriteString(strings.Repeat(" ", pad) + c)
			}
			b.WriteString("  ")
		}
		b.WriteString("\n")
	}
	for _, n := range rep.footnotes() {
		b.WriteString("\n" + n)
	}
	return b.String()
}

// markdown is the table for the README.
func (rep *report) markdown() string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "Machine: %d × %s, %d GiB, Linux %s, %s", m.CPUs, m.CPUModel, m.MemoryGiB, m.Kernel, m.GoVersion)
	if m.Caddy != "" {
		fmt.Fprintf(&b, ", Caddy %s", m.Caddy)
	}
	if m.Websockify != "" {
		fmt.Fprintf(&b, ", websockify %s", m.Websockify)
	}
	fmt.Fprintf(&b, ". Load average before the run: %s. Everything on loopback; client, VNC server stand-in and proxy share the CPUs.\n\n", m.LoadAvg)
	fmt.Fprintf(&b, "Command: `%s` at commit %s (%s)\n\n", rep.Command, m.Commit, rep.Generated)
	h := rep.header()
	b.WriteString("| " + strings.Join(h, " | ") + " |\n|")
	for i := range h {
		if i == 0 || i >= len(h)-2 {
			b.WriteString("---|")
		} else {
			b.WriteString("---:|")
		}
	}
	b.WriteString("\n")
	for _, r := range rep.cells() {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	b.WriteString("\n")
	for _, n := range rep.footnotes() {
		b.WriteString("- " + n + "\n")
	}
	return b.String()
}

func (rep *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.md"), []byte(rep.markdown()), 0o644); err != nil {
		return err
	}
	return writeChart(filepath.Join(dir, "latest.png"), rep)
}
