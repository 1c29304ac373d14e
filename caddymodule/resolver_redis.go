package caddymodule

import (
	"context"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/vncgate/caddy-vnc-proxy/internal/console"
	"github.com/vncgate/caddy-vnc-proxy/tokenresolver"
)

func init() {
	caddy.RegisterModule(RedisResolver{})
}

// RedisResolver resolves tokens by reading the key <key_prefix><token> from
// Redis: a single server, a Sentinel-managed master, or a Cluster.
//
// The value is the target as plain text host:port or as JSON ({"host": "h:p"}
// or {"host": "h", "port": 5901}, optionally with "expires_at" and
// "password"). The key's TTL is the token's lifetime; an "expires_at" in the
// value counts too, and the earlier of the two wins. A missing key is an
// unknown token (the client gets 403); Redis down or slow is an outage (503)
// after at most the timeout, and lookups work again as soon as Redis is back.
type RedisResolver struct {
	// Where Redis is: host:port addresses or redis:// / rediss:// URLs (whose
	// database, user, password and TLS apply unless set below). One address
	// is a single server; several with sentinel_master are Sentinels; several
	// without it are Cluster nodes. Required.
	Addresses []string `json:"addresses,omitempty"`

	// The name of the master that the Sentinels at Addresses watch.
	// Default: "" (no Sentinel).
	SentinelMaster string `json:"sentinel_master,omitempty"`

	// Put before the token to form the key. Default: "".
	KeyPrefix string `json:"key_prefix,omitempty"`

	// The database number (a Cluster has only 0). Default: 0, or the URL's.
	DB int `json:"db,omitempty"`

	// The user and password (placeholders such as {env.REDIS_PASSWORD}
	// work), also used for the Sentinels. Default: none, or the URL's.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`

	// Connect with TLS (implied by a rediss:// URL). Default: false.
	TLS bool `json:"tls,omitempty"`

	// How long one lookup, connecting included, may take. Default: 2s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Delete the key in the same atomic step that reads it, so a token opens
	// one session only, across every Caddy sharing this Redis. Default: false.
	OneTime bool `json:"one_time,omitempty"`

	// A Redis channel this node subscribes to: each message, JSON with
	// "token_hash" or "target" as for the admin API's
	// POST /vnc_proxy/sessions/close, ends the matching live consoles of
	// this Caddy process (close 1008 "closed by administrator"), so one
	// PUBLISH reaches every node. The subscription is renewed when Redis
	// restarts. Default: none.
	Revocations string `json:"revocations,omitempty"`

	redis        *tokenresolver.Redis
	logger       *zap.Logger
	stopWatching context.CancelFunc
	watching     chan struct{}
}

// revocationHealthCheck is how often the revocation subscription is
// pinged, so that a Redis restart is noticed and the subscription renewed
// within a few seconds.
const revocationHealthCheck = time.Second

// CaddyModule returns the Caddy module information.
func (RedisResolver) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.vnc_proxy.resolvers.redis",
		New: func() caddy.Module { return new(RedisResolver) },
	}
}

// Provision replaces placeholders and creates the Redis client and its
// connection pool. It does not connect, so Caddy starts while Redis is down.
func (r *RedisResolver) Provision(ctx caddy.Context) error {
	secrets := []secretOption{{"resolver redis password", r.Password, "REDIS_PASSWORD"}}
	for _, a := range r.Addresses {
		secrets = append(secrets, secretOption{"resolver redis address (its password)", urlPassword(a), "REDIS_URL"})
	}
	warnLiteralSecrets(ctx.Logger(), secrets)
	repl := caddy.NewReplacer()
	addrs := make([]string, len(r.Addresses))
	for i, a := range r.Addresses {
		addrs[i] = repl.ReplaceKnown(a, "")
	}
	r.redis = &tokenresolver.Redis{
		Addrs:      addrs,
		MasterName: repl.ReplaceKnown(r.SentinelMaster, ""),
		DB:         r.DB,
		Username:   repl.ReplaceKnown(r.Username, ""),
		Password:   repl.ReplaceKnown(r.Password, ""),
		TLS:        r.TLS,
		KeyPrefix:  repl.ReplaceKnown(r.KeyPrefix, ""),
		Timeout:    time.Duration(r.Timeout),
		OneTime:    r.OneTime,
	}
	if err := r.redis.Init(); err != nil {
		return err
	}
	r.logger = ctx.Logger()
	if channel := repl.ReplaceKnown(r.Revocations, ""); channel != "" {
		var watchCtx context.Context
		watchCtx, r.stopWatching = context.WithCancel(context.Background())
		r.watching = make(chan struct{})
		go func() {
			defer close(r.watching)
			r.redis.Watch(watchCtx, channel, revocationHealthCheck, r.revoke, func(err error) {
				r.logger.Warn("subscribing to revocations", zap.String("channel", channel), zap.Error(err))
			})
		}()
	}
	return nil
}

// revoke ends the consoles a revocation message names.
func (r *RedisResolver) revoke(payload string) {
	req, err := console.ParseCloseRequest([]byte(payload))
	if err != nil {
		r.logger.Warn("ignoring a revocation message", zap.Error(err))
		return
	}
	n := console.Sessions.EndMatching(req.Matches, console.ReasonByAdmin)
	r.logger.Info("consoles revoked", zap.String("token_hash", req.TokenHash), zap.String("target", req.Target), zap.Int("closed", n))
}

// Cleanup stops the revocation subscription and closes the Redis client.
func (r *RedisResolver) Cleanup() error {
	if r.redis == nil {
		return nil
	}
	if r.stopWatching != nil {
		r.stopWatching()
		<-r.watching
	}
	return r.redis.Close()
}

// Resolve reads (with one_time: consumes) the token's key.
func (r *RedisResolver) Resolve(ctx context.Context, q tokenresolver.Query) (tokenresolver.Target, error) {
	return r.redis.Resolve(ctx, q)
}

// UnmarshalCaddyfile sets up the resolver from Caddyfile tokens:
//
//	resolver redis <address|redis://url> [<address>...] {
//		key_prefix <prefix>
//		db <n>
//		username <user>
//		password <password>
//		tls
//		timeout <duration>
//		one_time
//		sentinel_master <name>
//		revocations <channel>
//	}
func (r *RedisResolver) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the resolver's name
	r.Addresses = d.RemainingArgs()
	if len(r.Addresses) == 0 {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for d.NextBlock(0) {
		option := d.Val()
		if seen[option] {
			return d.Errf("%s already specified", option)
		}
		seen[option] = true
		switch option {
		case "key_prefix", "username", "password", "sentinel_master", "revocations":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			switch option {
			case "key_prefix":
				r.KeyPrefix = v
			case "username":
				r.Username = v
			case "password":
				r.Password = v
			case "sentinel_master":
				r.SentinelMaster = v
			case "revocations":
				r.Revocations = v
			}
		case "db":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return d.Errf("db must be a non-negative number, not %q", v)
			}
			r.DB = n
		case "tls", "one_time":
			if d.NextArg() {
				return d.ArgErr()
			}
			if option == "tls" {
				r.TLS = true
			} else {
				r.OneTime = true
			}
		case "timeout":
			v, err := parseDuration(d)
			if err != nil {
				return err
			}
			r.Timeout = v
		default:
			return d.Errf("unknown option %q", option)
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner      = (*RedisResolver)(nil)
	_ caddy.CleanerUpper     = (*RedisResolver)(nil)
	_ caddyfile.Unmarshaler  = (*RedisResolver)(nil)
	_ tokenresolver.Resolver = (*RedisResolver)(nil)
)
