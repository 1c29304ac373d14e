package tokenresolver

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// DefaultRedisTimeout bounds one lookup when Redis.Timeout is zero.
const DefaultRedisTimeout = 2 * time.Second

// A one-time token's key is not deleted by the lookup that uses it but
// marked, so that a lookup whose answer never reached its browser (a
// timeout while Redis stalled, a browser that left) can be undone:
//
//	"\x00spent <nonce> <expiry ms>\x00<value>"  used by the lookup <nonce>
//	"\x00abort <nonce> -1\x00<value>"           <nonce> gave up before its lookup ran
//
// The lookup that used it deletes the mark as soon as it has its answer
// (confirmScript); one that gave up restores the value (releaseScript).
// Marks of lookups that can do neither expire after the release window.
// Of several lookups of one key, at most one ever gets the value.
const markPattern = `'^%z(%a+) (%x+) (%-?%d+)%z(.*)$'`

// lookupScript reads a key's value and remaining lifetime in one atomic
// step. With ARGV[1] "1" (one-time tokens) it marks the key used by the
// nonce ARGV[2], the mark living at most ARGV[3] milliseconds.
var lookupScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return false end
local ttl = redis.call('PTTL', KEYS[1])
local kind, nonce, exp, orig = string.match(v, ` + markPattern + `)
if kind == 'spent' then return false end
if kind == 'abort' then
  if nonce == ARGV[2] then
    redis.call('SET', KEYS[1], orig, 'KEEPTTL')
    return false
  end
  v = orig
end
if ARGV[1] ~= '1' then return {v, ttl} end
local keep = tonumber(ARGV[3])
if ttl > 0 and ttl < keep then keep = ttl end
local expms = -1
if ttl > 0 then
  local t = redis.call('TIME')
  expms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl
end
redis.call('SET', KEYS[1], '\0spent ' .. ARGV[2] .. ' ' .. expms .. '\0' .. v, 'PX', keep)
return {v, ttl}
`)

// confirmScript deletes the mark of the lookup ARGV[1], which used the
// token.
var confirmScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local kind, nonce = string.match(v, ` + markPattern + `)
if kind == 'spent' and nonce == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
`)

// releaseScript undoes the lookup ARGV[1], whose answer was not used: it
// restores the value (with the lifetime it had) if that lookup marked the
// key, or, if the lookup has not run yet, marks the key so that it will
// not use the token when it does.
var releaseScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local kind, nonce, exp, orig = string.match(v, ` + markPattern + `)
if kind == nil then
  redis.call('SET', KEYS[1], '\0abort ' .. ARGV[1] .. ' -1\0' .. v, 'KEEPTTL')
  return 2
end
if kind == 'spent' and nonce == ARGV[1] then
  exp = tonumber(exp)
  if exp < 0 then
    redis.call('SET', KEYS[1], orig)
    return 1
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if exp <= now then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], orig, 'PX', exp - now)
  end
  return 1
end
return 0
`)

// maxPendingReleases bounds the lookups being undone in the background.
const maxPendingReleases = 1024

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
	// OneTime makes a token open one session only, across every proxy
	// sharing the Redis: the lookup that gets the value marks the key used
	// in the same atomic step, and deletes it once it has its answer. A
	// lookup whose answer was not used (it timed out, its browser left) is
	// undone in the background, for up to the release window, so a stall
	// of Redis does not use up the token of a browser that got 503.
	OneTime bool

	client   redis.UniversalClient
	now      func() time.Time
	base     context.Context
	stop     context.CancelFunc
	releases chan struct{} // semaphore of background releases
}

// Watch subscribes to the Redis channel and calls fn with the payload of
// each message published to it until ctx ends. go-redis renews the
// subscription when the connection breaks (a Redis restart), pinging it
// every healthCheck; failed (re)connection attempts go to onError, at
// most once a second.
func (r *Redis) Watch(ctx context.Context, channel string, healthCheck time.Duration, fn func(payload string), onError func(error)) {
	ps := r.client.Subscribe(ctx, channel)
	defer ps.Close()
	// The first subscription is confirmed (or fails) here; later ones are
	// renewed by the channel.
	for {
		_, err := ps.Receive(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		onError(err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	msgs := ps.Channel(redis.WithChannelHealthCheckInterval(healthCheck))
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			fn(m.Payload)
		}
	}
}

// releaseWindow is how long a one-time lookup whose answer was not used
// keeps trying to give the token back, and how long a mark lives at most.
func (r *Redis) releaseWindow() time.Duration {
	return max(30*time.Second, 5*r.Timeout)
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
	r.base, r.stop = context.WithCancel(context.Background())
	r.releases = make(chan struct{}, maxPendingReleases)
	return nil
}

// Close stops background work and closes the client's connections.
func (r *Redis) Close() error {
	if r.client == nil {
		return nil
	}
	r.stop()
	return r.client.Close()
}

// Resolve reads (and with OneTime, uses up) the token's key.
func (r *Redis) Resolve(ctx context.Context, q Query) (Target, error) {
	if q.Token == "" {
		return Target{}, ErrNotFound
	}
	key := r.KeyPrefix + q.Token
	lookupCtx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	consume, nonce := "0", ""
	if r.OneTime {
		consume, nonce = "1", newNonce()
	}
	window := strconv.FormatInt(r.releaseWindow().Milliseconds(), 10)
	reply, err := lookupScript.Run(lookupCtx, r.client, []string{key}, consume, nonce, window).Result()
	if errors.Is(err, redis.Nil) {
		return Target{}, ErrNotFound
	}
	if err == nil && r.OneTime && ctx.Err() != nil {
		// The browser left while Redis answered: give the token back.
		err = ctx.Err()
	}
	if err != nil {
		if r.OneTime {
			// The lookup may have run, or may still run: undo it.
			r.release(key, nonce)
		}
		// go-redis errors name the server and the failure, never the key.
		if errors.Is(err, context.DeadlineExceeded) {
			return Target{}, fmt.Errorf("%w: redis: timed out after %v: %v", ErrUnavailable, r.Timeout, err)
		}
		return Target{}, fmt.Errorf("%w: redis: %v", ErrUnavailable, err)
	}
	if r.OneTime {
		r.background(func(ctx context.Context) bool {
			return confirmScript.Run(ctx, r.client, []string{key}, nonce).Err() == nil
		}, false)
	}
	value, pttl, err := decodeLookupReply(reply)
	if err != nil {
		return Target{}, fmt.Errorf("%w: redis: %w", ErrUnavailable, err)
	}
	return targetFromRedis(value, pttl, r.now())
}

// release gives back a one-time token whose lookup's answer was not used,
// retrying until Redis answers or the release window ends.
func (r *Redis) release(key, nonce string) {
	r.background(func(ctx context.Context) bool {
		return releaseScript.Run(ctx, r.client, []string{key}, nonce).Err() == nil
	}, true)
}

// background runs try, each attempt bounded by Timeout, in a goroutine of
// its own; with retry, again with backoff until it succeeds or the release
// window ends. At most maxPendingReleases run at once; beyond, the attempt
// is dropped (a mark left then expires with the release window).
func (r *Redis) background(try func(context.Context) bool, retry bool) {
	select {
	case r.releases <- struct{}{}:
	default:
		return
	}
	go func() {
		defer func() { <-r.releases }()
		ctx, cancel := context.WithTimeout(r.base, r.releaseWindow())
		defer cancel()
		wait := 100 * time.Millisecond
		for {
			attempt, cancelAttempt := context.WithTimeout(ctx, r.Timeout)
			ok := try(attempt)
			cancelAttempt()
			if ok || !retry {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 2*time.Second)
		}
	}()
}

func newNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
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
