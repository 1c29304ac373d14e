package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/internal/admission"
	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/internal/recording"
)

// RecordOptions record consoles: the RFB stream each browser (or native
// viewer) receives, with millisecond timestamps, in the FBS 001.000 file
// format, and a JSON sidecar per recording (internal/recording). A
// recorded console runs in the RFB-aware mode: the proxy logs in to the
// VNC server itself (with vnc_auth's credentials or the token's, or
// security None) and offers the browser security None, so that the
// recording replays without credentials.
type RecordOptions struct {
	// The directory recordings are written to, as <id>.fbs, <id>.json and,
	// with include_input, <id>.input, each 0600; it is created 0700 if
	// missing. Required.
	Dir string `json:"dir,omitempty"`

	// Only consoles whose token's record says "record": true are
	// recorded. Default: false (every console is recorded).
	OptIn bool `json:"opt_in,omitempty"`

	// Recordings older than this are deleted. Default: 0 (kept).
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	// The oldest recordings are deleted while the directory's
	// recordings (all their files) take more bytes than this. Default: 0
	// (no limit).
	MaxTotal int64 `json:"max_total,omitempty"`

	// The browser's KeyEvent and PointerEvent messages are kept too, in
	// <id>.input. Default: false.
	IncludeInput bool `json:"include_input,omitempty"`

	// What a failed recording (a full queue, a failed write) does to its
	// console: "end" ends it with close 1011 "recording failed", for
	// operators who must not have unrecorded consoles; "continue" logs it
	// once and the console goes on unrecorded. Default: "end".
	OnError string `json:"on_error,omitempty"`

	// The retention this config uses (recordDirs' key).
	retentionKey string
}

// On-error policies.
const (
	onErrorEnd      = "end"
	onErrorContinue = "continue"
)

// provisionRecording checks the record options and takes the directory's
// retention; releaseRecording lets go of it. Both doors call them.
func (o *ConsoleOptions) provisionRecording(ctx caddy.Context, cfg *admission.Config) error {
	r := o.Record
	if r == nil {
		return nil
	}
	if r.Dir == "" {
		return errors.New("record: dir is required")
	}
	switch r.OnError {
	case "", onErrorEnd, onErrorContinue:
	default:
		return fmt.Errorf("record: on_error %q: want end or continue", r.OnError)
	}
	if r.MaxAge < 0 || r.MaxTotal < 0 {
		return errors.New("record: max_age and max_total must not be negative")
	}
	dir, err := filepath.Abs(r.Dir)
	if err != nil {
		return fmt.Errorf("record: dir: %w", err)
	}
	r.Dir = dir
	// Refused now rather than on every console.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	cfg.Record, cfg.RecordOptIn = true, r.OptIn
	r.retentionKey = retentionKey(dir, time.Duration(r.MaxAge), r.MaxTotal)
	logger := ctx.Logger()
	_, _, err = recordDirs.LoadOrNew(r.retentionKey, func() (caddy.Destructor, error) {
		return newRecordDir(dir, time.Duration(r.MaxAge), r.MaxTotal, logger), nil
	})
	if err != nil {
		r.retentionKey = ""
	}
	return err
}

func (o *ConsoleOptions) releaseRecording() {
	if o.Record != nil && o.Record.retentionKey != "" {
		_, _ = recordDirs.Delete(o.Record.retentionKey)
		o.Record.retentionKey = ""
	}
}

// consoleRecord is how the admitted console c is recorded; nil when it is
// not.
func (o *ConsoleOptions) consoleRecord(c *admission.Console) *console.Record {
	if o.Record == nil || !c.Record {
		return nil
	}
	return &console.Record{
		Config: recording.Config{
			Dir:          o.Record.Dir,
			IncludeInput: o.Record.IncludeInput,
			QueueWait:    recording.ProxyQueueWait,
			Retention:    dirRetention(o.Record.Dir),
		},
		ContinueOnError: o.Record.OnError == onErrorContinue,
	}
}

// recordDirs holds the recording directories of the running configs, each
// with its retention, by directory and limits: handlers and listeners
// that share them share one retention, which a reload that keeps them
// keeps running. Retention is per process (the live recordings it leaves
// alone are this process's).
var recordDirs = caddy.NewUsagePool()

func retentionKey(dir string, maxAge time.Duration, maxTotal int64) string {
	return dir + "\x00" + maxAge.String() + "\x00" + strconv.FormatInt(maxTotal, 10)
}

// recordDir is one recording directory and its retention.
type recordDir struct {
	dir       string
	retention *recording.Retention
}

func newRecordDir(dir string, maxAge time.Duration, maxTotal int64, logger *zap.Logger) *recordDir {
	ret := recording.NewRetention(dir, maxAge, maxTotal)
	ret.Report = func(deleted []string, err error) {
		if len(deleted) > 0 {
			logger.Info("recordings deleted by retention", zap.String("dir", dir), zap.Strings("recordings", deleted))
		}
		if err != nil {
			logger.Error("recording retention", zap.String("dir", dir), zap.Error(err))
		}
	}
	if maxAge > 0 || maxTotal > 0 {
		ret.Start()
	}
	return &recordDir{dir: dir, retention: ret}
}

// Destruct stops the retention once no config uses it.
func (d *recordDir) Destruct() error {
	d.retention.Stop()
	return nil
}

// dirRetention is what a finished recording tells: every retention of its
// directory that a running config has, which, for a console that outlived
// a reload, is the new config's.
type dirRetention string

func (d dirRetention) Trigger() {
	recordDirs.Range(func(_, v any) bool {
		if rd := v.(*recordDir); rd.dir == string(d) {
			rd.retention.Trigger()
		}
		return true
	})
}

// recordingDirs lists the recording directories of the running configs.
func recordingDirs() []string {
	var dirs []string
	recordDirs.Range(func(_, v any) bool {
		if dir := v.(*recordDir).dir; !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
		return true
	})
	slices.Sort(dirs)
	return dirs
}

// recordings answers GET /vnc_proxy/recordings: the sidecars of every
// configured directory, oldest first.
func (a *AdminAPI) recordings(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	all := []recording.Sidecar{}
	for _, dir := range recordingDirs() {
		list, err := recording.List(dir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: errors.New("listing recordings failed")}
		}
		all = append(all, list...)
	}
	slices.SortStableFunc(all, func(x, y recording.Sidecar) int { return x.Started.Compare(y.Started) })
	return writeJSON(w, all)
}

// recording answers GET /vnc_proxy/recordings/<id>: the recording's FBS
// file, with Range requests answered (http.ServeContent). <id>.fbs is the
// same; <id>.json is its sidecar, so that a player given the first finds
// the second.
func (a *AdminAPI) recording(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	notFound := caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("no such recording")}
	name := strings.TrimPrefix(r.URL.Path, "/vnc_proxy/recordings/")
	id, sidecar := strings.CutSuffix(name, ".json")
	if !sidecar {
		id = strings.TrimSuffix(name, ".fbs")
	}
	for _, dir := range recordingDirs() {
		if sidecar {
			s, err := recording.ReadSidecar(dir, id)
			if err != nil {
				continue
			}
			w.Header().Set("Cache-Control", "no-store")
			return writeJSON(w, s)
		}
		f, err := recording.Open(dir, id)
		if errors.Is(err, recording.ErrNotFound) {
			continue
		}
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: errors.New("opening the recording failed")}
		}
		defer f.Close()
		info, err := f.Stat()
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: errors.New("opening the recording failed")}
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.fbs"`)
		// A live recording grows: no cache may keep a shorter copy.
		w.Header().Set("Cache-Control", "no-store")
		http.ServeContent(w, r, "", info.ModTime(), f)
		return nil
	}
	return notFound
}

// unmarshalCaddyfile reads record's argument (the directory, a shorthand
// for dir) and block.
func (r *RecordOptions) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		r.Dir = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	err := eachBlockOption(d, "record", func(opt string) error {
		switch opt {
		case "dir":
			if r.Dir != "" {
				return d.Err("record: dir already specified")
			}
			if !d.AllArgs(&r.Dir) {
				return d.ArgErr()
			}
		case "opt_in", "include_input":
			on, err := parseOnOff(d)
			if err != nil {
				return err
			}
			if opt == "opt_in" {
				r.OptIn = on
			} else {
				r.IncludeInput = on
			}
		case "max_age":
			dur, err := parseDuration(d)
			if err != nil {
				return err
			}
			r.MaxAge = dur
		case "max_total":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			size, err := humanize.ParseBytes(s)
			if err != nil || size > 1<<62 {
				return d.Errf("record: max_total: invalid size %q", s)
			}
			r.MaxTotal = int64(size)
		case "on_error":
			if !d.AllArgs(&r.OnError) {
				return d.ArgErr()
			}
			if r.OnError != onErrorEnd && r.OnError != onErrorContinue {
				return d.Errf("record: on_error %q: want end or continue", r.OnError)
			}
		default:
			return d.Errf("unrecognized record option %q", opt)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if r.Dir == "" {
		return d.Err("record: dir is required")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Destructor  = (*recordDir)(nil)
	_ recording.Trigger = dirRetention("")
)
