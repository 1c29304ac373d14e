package caddymodule

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
	"github.com/vncgate/caddy-vnc-proxy/internal/console"

	"github.com/prometheus/client_golang/prometheus"
)

// The collectors are process-wide so that counts carry over config reloads;
// each config's registry gets them registered anew. Like Caddy's own HTTP
// metrics they carry the label "server", the name of the server in Caddy's
// config (srv0, ...), so several sites on one Caddy count apart.
var (
	sessionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "vnc_proxy",
		Name:      "requests_total",
		Help:      "Console requests by result: started, or why they were refused (client_gone: the client left before its console started).",
	}, []string{"server", "result"})

	sessionsActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy",
		Subsystem: "vnc_proxy",
		Name:      "sessions_active",
		Help:      "Consoles being relayed now.",
	}, []string{"server"})

	bytesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "vnc_proxy",
		Name:      "bytes_total",
		Help:      "Bytes relayed, by direction: to_browser or to_target.",
	}, []string{"server", "direction"})

	resolveDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy",
		Subsystem: "vnc_proxy",
		Name:      "resolve_duration_seconds",
		Help:      "How long token resolvers took to answer.",
		Buckets:   []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 2, 5},
	}, []string{"server"})

	tokenFileSkipped = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy",
		Subsystem: "vnc_proxy",
		Name:      "token_file_skipped_lines",
		Help:      "Malformed lines the last load of each token file left out.",
	}, []string{"path"})

	recordingFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "vnc_proxy",
		Name:      "recording_failures_total",
		Help:      "Console recordings that failed (a full disk, a disk that stalled), whether the console then ended or went on unrecorded.",
	}, []string{"server"})

	sessionDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy",
		Subsystem: "vnc_proxy",
		Name:      "session_duration_seconds",
		Help:      "How long consoles stayed open.",
		Buckets:   []float64{1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600},
	}, []string{"server"})
)

// registerMetrics adds the handler's collectors to a config's registry; a
// second handler in the same config finds them there already.
func registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{sessionsTotal, sessionsActive, bytesTotal, resolveDuration, sessionDuration, tokenFileSkipped, recordingFailures} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// pipelineMetrics are the admission pipeline's hooks into the metrics.
var pipelineMetrics = admission.Metrics{
	Result: func(server, result string) { sessionsTotal.WithLabelValues(server, result).Inc() },
	Resolved: func(server string, d time.Duration) {
		resolveDuration.WithLabelValues(server).Observe(d.Seconds())
	},
}

// sessionMetrics are the collectors a console of server counts in, one
// set per server, which every console of the server shares.
func sessionMetrics(server string) *console.Metrics {
	if m, ok := serverMetrics.Load(server); ok {
		return m.(*console.Metrics)
	}
	m, _ := serverMetrics.LoadOrStore(server, &console.Metrics{
		BytesToBrowser:    bytesTotal.WithLabelValues(server, "to_browser"),
		BytesToTarget:     bytesTotal.WithLabelValues(server, "to_target"),
		Active:            sessionsActive.WithLabelValues(server),
		Duration:          sessionDuration.WithLabelValues(server),
		RecordingFailures: recordingFailures.WithLabelValues(server),
	})
	return m.(*console.Metrics)
}

// serverMetrics holds sessionMetrics' sets by server name; the collectors
// are the process's, so a set outlives config reloads.
var serverMetrics sync.Map

// serverName is the name of the Caddy server handling r (srv0, ...), for
// the metrics' "server" label.
func serverName(r *http.Request) string {
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		return srv.Name()
	}
	return ""
}
