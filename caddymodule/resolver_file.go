package caddymodule

import (
	"context"
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

func init() {
	caddy.RegisterModule(FileResolver{})
}

// FileResolver resolves tokens from a websockify token file, or a directory
// of them, and reloads it when it changes.
//
// Each line is "token: target", where the target is host:port,
// [ipv6]:port, a bare IPv6 address with the port after the last colon,
// unix_socket:/path or unix:/path; '#' starts a comment line and blank lines
// are ignored. A malformed line fails the config load, naming file and line.
// After a change the file is read again (within about 100ms); a malformed
// edit is logged and the previous tokens stay in use.
type FileResolver struct {
	// The token file, or a directory whose regular files (except hidden
	// and editor temporary files) are all token files. Placeholders such
	// as {env.VNC_TOKENS} are replaced at load. Required.
	Path string `json:"path,omitempty"`

	file   *tokenresolver.File
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (FileResolver) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.vnc_proxy.resolvers.file",
		New: func() caddy.Module { return new(FileResolver) },
	}
}

// Provision reads the token file and starts watching it.
func (r *FileResolver) Provision(ctx caddy.Context) error {
	r.logger = ctx.Logger()
	path := caddy.NewReplacer().ReplaceKnown(r.Path, "")
	if path == "" {
		return errors.New("file resolver: path is required")
	}
	logger := r.logger.With(zap.String("path", path))
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	skippedGauge := tokenFileSkipped.WithLabelValues(path)
	f, err := tokenresolver.OpenFile(path, tokenresolver.FileOptions{
		OnReload: func(n int, skipped tokenresolver.Skipped) {
			logger.Info("token file reloaded", zap.Int("tokens", n))
			reportSkipped(logger, skippedGauge, skipped)
		},
		OnError: func(err error) {
			logger.Error("token file not reloaded", zap.Error(err))
		},
	})
	if err != nil {
		return fmt.Errorf("file resolver: %w", err)
	}
	r.file = f
	logger.Info("token file loaded", zap.Int("tokens", f.Len()))
	reportSkipped(logger, skippedGauge, f.Skipped())
	return nil
}

// reportSkipped logs the malformed lines a load left out, once per load
// that changed the tokens, naming file, line and reason (never the token),
// and sets the gauge of skipped lines.
func reportSkipped(logger *zap.Logger, gauge prometheus.Gauge, skipped tokenresolver.Skipped) {
	gauge.Set(float64(skipped.Lines))
	if skipped.Lines == 0 {
		return
	}
	lines := make([]string, len(skipped.First))
	for i, e := range skipped.First {
		lines[i] = e.Error()
	}
	logger.Warn("token file lines skipped", zap.Int("skipped", skipped.Lines), zap.Strings("lines", lines))
}

// Cleanup stops watching the token file.
func (r *FileResolver) Cleanup() error {
	if r.file == nil {
		return nil
	}
	return r.file.Close()
}

// Resolve looks the token up in the file's current table.
func (r *FileResolver) Resolve(ctx context.Context, q tokenresolver.Query) (tokenresolver.Target, error) {
	if r.file == nil {
		return tokenresolver.Target{}, fmt.Errorf("file resolver not provisioned: %w", tokenresolver.ErrUnavailable)
	}
	return r.file.Resolve(ctx, q)
}

// UnmarshalCaddyfile sets up the resolver from Caddyfile tokens:
//
//	resolver file <path>
func (r *FileResolver) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the resolver's name
	args := d.RemainingArgs()
	if len(args) != 1 {
		return d.Errf("expected exactly one path, got %d arguments", len(args))
	}
	r.Path = args[0]
	if d.NextBlock(0) {
		return d.Errf("unknown option %q: the file resolver takes only a path", d.Val())
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner      = (*FileResolver)(nil)
	_ caddy.CleanerUpper     = (*FileResolver)(nil)
	_ caddyfile.Unmarshaler  = (*FileResolver)(nil)
	_ tokenresolver.Resolver = (*FileResolver)(nil)
)
