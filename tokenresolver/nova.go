package tokenresolver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// NovaMicroversion is the compute API microversion the nova resolver asks
// for: 2.31 is the first that answers os-console-auth-tokens for every
// console type (novnc, spice-html5, serial). A later one would add nothing
// the proxy uses (2.99 adds the tls_port of spice-direct consoles) and
// would shut out the clouds that do not offer it.
const NovaMicroversion = "2.31"

// keystoneRenewal is how long before its expiry a Keystone token is
// replaced.
const keystoneRenewal = time.Minute

// Nova resolves a token by asking OpenStack's compute API (nova) which
// console it stands for: GET /os-console-auth-tokens/{token}, authenticated
// with a Keystone v3 token that Nova gets and renews itself, with an
// application credential or a user's password.
//
// nova's answer {"console": {"host": ..., "port": ...}} is the target; 404
// (unknown or expired token) is ErrNotFound; 401 renews the Keystone token
// once; any other answer, a timeout, a Keystone failure, a console with an
// internal_access_path (which this proxy does not serve) or with a tls_port
// and no port (SPICE over TLS only, which it does not speak to the
// hypervisor) is ErrUnavailable. Lookups of the same token share one
// request. Errors never contain the console token, the Keystone token or a
// credential.
//
// novnc, spice-html5 and serial tokens are looked up alike. nova's answer
// has the console's host and port but not its type, so the resolver cannot
// tell a novnc token from a serial one. (nova's own proxies do not compare
// a token's type with their own either: they check its port against the
// instance's console of the token's type, over nova's internal RPC.) The
// handler's protocol check tells consoles apart where the protocol has one
// (the RFB greeting, SPICE's REDQ); allow_targets with nova's serial
// port_range keeps a serial endpoint to serial ports.
//
// Configure the exported fields, then call Init once before the first
// Resolve, and Close when done.
type Nova struct {
	// ComputeURL is the compute API's endpoint, e.g.
	// https://nova.internal:8774/v2.1.
	ComputeURL string
	// KeystoneURL is the identity API's v3 endpoint, e.g.
	// https://keystone.internal:5000/v3.
	KeystoneURL string

	// An application credential, or else the password method with a user,
	// its domain, and a project to scope to.
	ApplicationCredentialID     string
	ApplicationCredentialSecret string
	Username                    string
	Password                    string
	Project                     string
	UserDomain                  string // Default: "Default"
	ProjectDomain               string // Default: "Default"

	// Timeout bounds each Keystone and each nova request. Default: 2s.
	Timeout time.Duration
	// MaxInFlight bounds the lookups in flight, as HTTPCallback's does.
	// Default: 256.
	MaxInFlight int
	// Client sends the requests (set its TLS roots for a private CA).
	// Default: a client with its own transport.
	Client *http.Client

	base    context.Context
	stop    context.CancelFunc
	flights flightGroup
	authMu  sync.Mutex // serializes Keystone logins; guards the fields below
	token   string
	expires time.Time
	now     func() time.Time
}

// Init checks the configuration.
func (n *Nova) Init() error {
	for name, u := range map[string]string{"compute URL": n.ComputeURL, "Keystone URL": n.KeystoneURL} {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("nova: the %s must be an absolute http:// or https:// URL", name)
		}
	}
	n.ComputeURL = strings.TrimSuffix(n.ComputeURL, "/")
	n.KeystoneURL = strings.TrimSuffix(n.KeystoneURL, "/")
	appCred := n.ApplicationCredentialID != "" || n.ApplicationCredentialSecret != ""
	password := n.Username != "" || n.Password != "" || n.Project != ""
	switch {
	case appCred && password:
		return errors.New("nova: give an application credential or a username and password, not both")
	case appCred && (n.ApplicationCredentialID == "" || n.ApplicationCredentialSecret == ""):
		return errors.New("nova: an application credential needs its id and its secret")
	case password && (n.Username == "" || n.Password == "" || n.Project == ""):
		return errors.New("nova: the password method needs username, password and project")
	case !appCred && !password:
		return errors.New("nova: give an application credential, or a username, password and project")
	}
	if n.UserDomain == "" {
		n.UserDomain = "Default"
	}
	if n.ProjectDomain == "" {
		n.ProjectDomain = "Default"
	}
	if n.Timeout < 0 || n.MaxInFlight < 0 {
		return errors.New("nova: timeout and requests in flight must not be negative")
	}
	if n.Timeout == 0 {
		n.Timeout = DefaultHTTPTimeout
	}
	if n.MaxInFlight == 0 {
		n.MaxInFlight = DefaultMaxInFlight
	}
	if n.Client == nil {
		n.Client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	n.Client = noRedirects(n.Client)
	n.base, n.stop = context.WithCancel(context.Background())
	if n.now == nil {
		n.now = time.Now
	}
	return nil
}

// Close ends requests in flight and closes idle connections.
func (n *Nova) Close() error {
	if n.stop != nil {
		n.stop()
	}
	n.Client.CloseIdleConnections()
	return nil
}

// Resolve asks nova for the console the token stands for.
func (n *Nova) Resolve(ctx context.Context, q Query) (Target, error) {
	if q.Token == "" {
		return Target{}, ErrNotFound
	}
	return n.flights.do(ctx, n.base, q.Token, n.MaxInFlight, "nova", func(ctx context.Context) (Target, error) {
		return n.lookup(ctx, q.Token)
	})
}

// lookup asks nova once, and once more with a new Keystone token if nova
// answers 401.
func (n *Nova) lookup(ctx context.Context, token string) (Target, error) {
	for attempt := 0; ; attempt++ {
		ktoken, err := n.keystoneToken(ctx, attempt > 0)
		if err != nil {
			return Target{}, err
		}
		t, status, err := n.console(ctx, ktoken, token)
		if status == http.StatusUnauthorized && attempt == 0 {
			continue
		}
		return t, err
	}
}

// console asks nova for one console token.
func (n *Nova) console(ctx context.Context, ktoken, token string) (Target, int, error) {
	ctx, cancel := context.WithTimeout(ctx, n.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.ComputeURL+"/os-console-auth-tokens/"+escapeToken(token), nil)
	if err != nil {
		return Target{}, 0, fmt.Errorf("%w: nova: the compute URL with the token does not parse", ErrUnavailable)
	}
	req.Header.Set("X-Auth-Token", ktoken)
	req.Header.Set("OpenStack-API-Version", "compute "+NovaMicroversion)
	req.Header.Set("X-OpenStack-Nova-API-Version", NovaMicroversion)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "caddy-vnc-proxy")
	resp, err := n.Client.Do(req)
	if err != nil {
		return Target{}, 0, fmt.Errorf("%w: nova: %v", ErrUnavailable, requestErrorReason(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCallbackBody+1))
	if err != nil {
		return Target{}, resp.StatusCode, fmt.Errorf("%w: nova: reading the answer: %v", ErrUnavailable, requestErrorReason(err))
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return Target{}, resp.StatusCode, fmt.Errorf("%w: nova answered 404", ErrNotFound)
	default:
		return Target{}, resp.StatusCode, fmt.Errorf("%w: nova answered %d", ErrUnavailable, resp.StatusCode)
	}
	if len(body) > maxCallbackBody {
		return Target{}, resp.StatusCode, fmt.Errorf("%w: nova: an answer larger than %d bytes", ErrUnavailable, maxCallbackBody)
	}
	t, err := ParseValue(body)
	if err != nil {
		return Target{}, resp.StatusCode, fmt.Errorf("%w: nova: %w", ErrUnavailable, err)
	}
	return t, resp.StatusCode, nil
}

// keystoneToken returns a Keystone token that is not about to expire,
// logging in when there is none or when renew is set.
func (n *Nova) keystoneToken(ctx context.Context, renew bool) (string, error) {
	n.authMu.Lock()
	defer n.authMu.Unlock()
	if !renew && n.token != "" && n.now().Add(keystoneRenewal).Before(n.expires) {
		return n.token, nil
	}
	token, expires, err := n.login(ctx)
	if err != nil {
		n.token = ""
		return "", err
	}
	n.token, n.expires = token, expires
	return token, nil
}

// The Keystone v3 login request (POST /auth/tokens).
type (
	keystoneLogin struct {
		Auth struct {
			Identity keystoneIdentity `json:"identity"`
			Scope    *keystoneScope   `json:"scope,omitempty"`
		} `json:"auth"`
	}
	keystoneIdentity struct {
		Methods               []string               `json:"methods"`
		ApplicationCredential *keystoneAppCredential `json:"application_credential,omitempty"`
		Password              *keystonePassword      `json:"password,omitempty"`
	}
	keystoneAppCredential struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	keystonePassword struct {
		User struct {
			Name     string       `json:"name"`
			Domain   keystoneName `json:"domain"`
			Password string       `json:"password"`
		} `json:"user"`
	}
	keystoneScope struct {
		Project struct {
			Name   string       `json:"name"`
			Domain keystoneName `json:"domain"`
		} `json:"project"`
	}
	keystoneName struct {
		Name string `json:"name"`
	}
)

// login asks Keystone v3 for a token.
func (n *Nova) login(ctx context.Context) (string, time.Time, error) {
	var body keystoneLogin
	id := &body.Auth.Identity
	if n.ApplicationCredentialID != "" {
		id.Methods = []string{"application_credential"}
		id.ApplicationCredential = &keystoneAppCredential{ID: n.ApplicationCredentialID, Secret: n.ApplicationCredentialSecret}
	} else {
		id.Methods = []string{"password"}
		id.Password = &keystonePassword{}
		id.Password.User.Name, id.Password.User.Domain.Name, id.Password.User.Password = n.Username, n.UserDomain, n.Password
		body.Auth.Scope = &keystoneScope{}
		body.Auth.Scope.Project.Name, body.Auth.Scope.Project.Domain.Name = n.Project, n.ProjectDomain
	}
	b, err := json.Marshal(body)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: keystone: encoding the request", ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, n.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.KeystoneURL+"/auth/tokens", bytes.NewReader(b))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: keystone: the URL does not parse", ErrUnavailable)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "caddy-vnc-proxy")
	resp, err := n.Client.Do(req)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: keystone: %v", ErrUnavailable, requestErrorReason(err))
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: keystone: reading the answer: %v", ErrUnavailable, requestErrorReason(err))
	}
	if resp.StatusCode != http.StatusCreated {
		return "", time.Time{}, fmt.Errorf("%w: keystone answered %d to the login", ErrUnavailable, resp.StatusCode)
	}
	token := resp.Header.Get("X-Subject-Token")
	if token == "" {
		return "", time.Time{}, fmt.Errorf("%w: keystone: no X-Subject-Token in the answer", ErrUnavailable)
	}
	var v struct {
		Token struct {
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"token"`
	}
	if err := json.Unmarshal(answer, &v); err != nil || v.Token.ExpiresAt.IsZero() {
		return "", time.Time{}, fmt.Errorf("%w: keystone: no token.expires_at in the answer", ErrUnavailable)
	}
	return token, v.Token.ExpiresAt, nil
}
