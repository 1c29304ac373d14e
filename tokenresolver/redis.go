package tokenresolver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// DefaultRedisTimeout bounds one lookup when Redis.Timeout is zero.
const DefaultRedisTimeout = 2 * time.Second

// lookupScript reads a key's value and remaining lifetime in one atomic step,
// and deletes the key when ARGV[1] is "1" (one-time tokens): of several
// proxies asking for the same key at once, exactly one gets the value.
var lookupScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return false end
local ttl = redis.call('PTTL', KEYS[1])
if ARGV[1] == '1' then redis.call('DEL', KEYS[1]) end
return {v, ttl}
`)

// Redis resolves a token by reading the key KeyPrefix+token from Redis: a
// single server, a Sentinel-managed master or a Cluster. The value is in any
// format ParseValue accepts; the key's TTL is the token's lifetime (an
// expires_at in the value also counts: the earlier one wins).
//
// Configure the exported fields, then call Init once before the first Resolve
// and Close when done.
type Redis struct {
	// Addrs are host:port addresses or redis:// / rediss:// URLs. One address
	// is a single server; with MasterName they are Sentinels; several without
	// MasterName are Cluster nodes. A URL's database, user, password and TLS
	// apply unless set explicitly below.
	Addrs []string
	// MasterName is the Sentinel master's name; empty when not using
	// Sentinel.
	MasterName string
	// DB is the database number (not for Cluster). Default: 0, or the URL's.
	DB int
	// Username and Password authenticate to Redis (and to the Sentinels).
	Username string
	Password string
	// TLS connects with TLS; TLSConfig, when set, configures it.
	TLS       bool
	TLSConfig *tls.Config
	// KeyPrefix is put before the token to form the key.
	KeyPrefix string
	// Timeout bounds one lookup, connecting included. Default: 2s.
	Timeout time.Duration
	// OneTime deletes the key in the same atomic step that reads it, so a
	// token opens one session only, across every proxy sharing the Redis.
	OneTime bool

	client redis.UniversalClient
	now    func() time.Time
}

// Init checks the configuration and creates the client (with its connection
// pool). It does not connect: a Redis that is down at start is no error, and
// lookups work as soon as it is up.
func (r *Redis) Init() error {
	if len(r.Addrs) == 0 {
		return errors.New("redis: no address")
	}
	if r.Timeout < 0 {
		return errors.New("redis: timeout must not be negative")
	}
	if r.Timeout == 0 {
		r.Timeout = DefaultRedisTimeout
	}
	opts := &redis.UniversalOptions{
		MasterName:            r.MasterName,
		DialTimeout:           r.Timeout,
		ReadTimeout:           r.Timeout,
		WriteTimeout:          r.Timeout,
		PoolTimeout:           r.Timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            1,
		DialerRetries:         1,
		DisableIdentity:       true,
		Protocol:              2,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	}
	for _, a := range r.Addrs {
		if !strings.HasPrefix(a, "redis://") && !strings.HasPrefix(a, "rediss://") {
			opts.Addrs = append(opts.Addrs, a)
			continue
		}
		u, err := redis.ParseURL(a)
		if err != nil {
			// The URL may hold a password: do not quote it.
			return fmt.Errorf("redis: address %d is not a valid redis:// URL", len(opts.Addrs)+1)
		}
		opts.Addrs = append(opts.Addrs, u.Addr)
		if opts.DB == 0 {
			opts.DB = u.DB
		}
		if opts.Username == "" {
			opts.Username = u.Username
		}
		if opts.Password == "" {
			opts.Password = u.Password
		}
		if opts.TLSConfig == nil {
			opts.TLSConfig = u.TLSConfig
		}
	}
	if r.DB != 0 {
		opts.DB = r.DB
	}
	if r.Username != "" {
		opts.Username = r.Username
	}
	if r.Password != "" {
		opts.Password = r.Password
	}
	if r.MasterName != "" {
		opts.SentinelUsername = opts.Username
		opts.SentinelPassword = opts.Password
	}
	if r.TLSConfig != nil {
		opts.TLSConfig = r.TLSConfig
	} else if r.TLS && opts.TLSConfig == nil {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if r.MasterName == "" && len(opts.Addrs) > 1 && opts.DB != 0 {
		return errors.New("redis: a Cluster has no databases other than 0")
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.client = redis.NewUniversalClient(opts)
	return nil
}

// Close closes the client's connections.
func (r *Redis) Close() error {
	if r.client == nil {
		return nil
	}
	return r.client.Close()
}

// Resolve reads (and with OneTime, consumes) the token's key.
func (r *Redis) Resolve(ctx context.Context, q Query) (Target, error) {
	if q.Token == "" {
		return Target{}, ErrNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	consume := "0"
	if r.OneTime {
		consume = "1"
	}
	reply, err := lookupScript.Run(ctx, r.client, []string{r.KeyPrefix + q.Token}, consume).Result()
	if errors.Is(err, redis.Nil) {
		return Target{}, ErrNotFound
	}
	if err != nil {
		// go-redis errors name the server and the failure, never the key.
		if errors.Is(err, context.DeadlineExceeded) {
			return Target{}, fmt.Errorf("%w: redis: timed out after %v: %v", ErrUnavailable, r.Timeout, err)
		}
		return Target{}, fmt.Errorf("%w: redis: %v", ErrUnavailable, err)
	}
	value, pttl, err := decodeLookupReply(reply)
	if err != nil {
		return Target{}, fmt.Errorf("%w: redis: %w", ErrUnavailable, err)
	}
	return targetFromRedis(value, pttl, r.now())
}

// decodeLookupReply takes lookupScript's answer apart: {value, pttl}.
func decodeLookupReply(reply any) (value string, pttl int64, err error) {
	a, ok := reply.([]any)
	if !ok || len(a) != 2 {
		return "", 0, fmt.Errorf("unexpected script reply of type %T", reply)
	}
	value, ok = a[0].(string)
	if !ok {
		return "", 0, fmt.Errorf("unexpected value of type %T", a[0])
	}
	pttl, ok = a[1].(int64)
	if !ok {
		return "", 0, fmt.Errorf("unexpected TTL of type %T", a[1])
	}
	return value, pttl, nil
}

// targetFromRedis parses a key's value; pttl is the key's remaining lifetime
// in milliseconds, negative when it has none. The earlier of the TTL and an
// expires_at in the value is the token's expiry.
func targetFromRedis(value string, pttl int64, now time.Time) (Target, error) {
	t, err := ParseValue([]byte(value))
	if err != nil {
		return Target{}, fmt.Errorf("%w: redis value: %w", ErrUnavailable, err)
	}
	if pttl >= 0 {
		exp := now.Add(time.Duration(min(pttl, int64(100*365*24*time.Hour/time.Millisecond))) * time.Millisecond)
		if t.ExpiresAt.IsZero() || exp.Before(t.ExpiresAt) {
			t.ExpiresAt = exp
		}
	}
	if t.Expired(now) {
		return Target{}, ErrExpired
	}
	return t, nil
}
