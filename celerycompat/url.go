package celerycompat

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/internal/rdb"

	"github.com/gomodule/redigo/redis"
)

// RedisURL is a broker or result-backend URL as Celery users write them:
//
//	redis://[[user]:password@]host[:port][/db]
//	rediss://...?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem
//	unix:///path/to/redis.sock?db=0      (also redis+socket:// and socket://, with db or virtual_host)
//	sentinel://[[user]:password@]host[:port][/db];sentinel://host2[:port]...
//
// A sentinel:// URL lists Redis Sentinels (default port 26379), separated by ";", as kombu's broker
// and Celery's SentinelBackend read them: user, password and database come from the first entry
// and are those of the master, not of the sentinels. The master name is not part of the URL
// (kombu rejects unknown query parameters): Celery takes it from
// broker_transport_options={'master_name': ...}; set MasterName after parsing. See NewPool for how
// the master is found and followed across a failover.
type RedisURL struct {
	Network  string // "tcp" or "unix"
	Address  string // host:port or socket path; empty for sentinel://, whose master is looked up
	DB       int
	Username string
	Password string
	// TLS is non-nil for rediss://.
	TLS *tls.Config
	// Sentinels are the host:port of each sentinel of a sentinel:// URL, in the order given; nil
	// for other schemes.
	Sentinels []string
	// MasterName is the name the sentinels monitor the master under: Celery's master_name
	// transport option. Required with Sentinels.
	MasterName string
	// SentinelPassword is sent to the sentinels (Celery: sentinel_kwargs={'password': ...});
	// empty sends none.
	SentinelPassword string
}

// ParseRedisURL parses a Celery-style Redis URL. The default port is 6379 and the default DB 0.
func ParseRedisURL(raw string) (*RedisURL, error) {
	if strings.HasPrefix(raw, "sentinel://") {
		return parseSentinelURL(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	r := &RedisURL{}
	if u.User != nil {
		r.Username = u.User.Username()
		r.Password, _ = u.User.Password()
	}
	q := u.Query()
	switch u.Scheme {
	case "redis", "rediss":
		r.Network = "tcp"
		host := u.Hostname()
		if host == "" {
			host = "localhost"
		}
		port := u.Port()
		if port == "" {
			port = "6379"
		}
		r.Address = host + ":" + port
		if p := strings.Trim(u.Path, "/"); p != "" {
			if r.DB, err = strconv.Atoi(p); err != nil || r.DB < 0 {
				return nil, fmt.Errorf("%w: database %q in %s", ErrInvalidURL, p, redact(u))
			}
		}
		if u.Scheme == "rediss" {
			if r.TLS, err = tlsFromQuery(host, q); err != nil {
				return nil, err
			}
		}
	case "unix", "redis+socket", "socket":
		r.Network = "unix"
		r.Address = u.Path
		if r.Address == "" {
			return nil, fmt.Errorf("%w: no socket path in %s", ErrInvalidURL, redact(u))
		}
		for _, name := range []string{"db", "virtual_host"} {
			if v := q.Get(name); v != "" {
				if r.DB, err = strconv.Atoi(v); err != nil || r.DB < 0 {
					return nil, fmt.Errorf("%w: %s=%q in %s", ErrInvalidURL, name, v, redact(u))
				}
			}
		}
	default:
		return nil, fmt.Errorf("%w: scheme %q (want redis, rediss, unix, sentinel)", ErrInvalidURL, u.Scheme)
	}
	if v := q.Get("db"); v != "" && r.Network == "tcp" {
		if r.DB, err = strconv.Atoi(v); err != nil || r.DB < 0 {
			return nil, fmt.Errorf("%w: db=%q in %s", ErrInvalidURL, v, redact(u))
		}
	}
	return r, nil
}

func redact(u *url.URL) string { return u.Redacted() }

func tlsFromQuery(host string, q url.Values) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	switch strings.ToLower(strings.TrimPrefix(q.Get("ssl_cert_reqs"), "ssl.")) {
	case "", "required", "cert_required":
	case "none", "cert_none":
		cfg.InsecureSkipVerify = true
	case "optional", "cert_optional":
		cfg.InsecureSkipVerify = true // Go has no "verify if presented"; treat as Python's CERT_OPTIONAL client side
	default:
		return nil, fmt.Errorf("%w: ssl_cert_reqs=%q", ErrInvalidURL, q.Get("ssl_cert_reqs"))
	}
	if ca := q.Get("ssl_ca_certs"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("%w: ssl_ca_certs: %v", ErrInvalidURL, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: ssl_ca_certs %s holds no PEM certificate", ErrInvalidURL, ca)
		}
		cfg.RootCAs = pool
	}
	cert, key := q.Get("ssl_certfile"), q.Get("ssl_keyfile")
	if cert != "" || key != "" {
		if cert == "" || key == "" {
			return nil, fmt.Errorf("%w: ssl_certfile and ssl_keyfile go together", ErrInvalidURL)
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("%w: client certificate: %v", ErrInvalidURL, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// DialOptions returns redigo dial options for the URL.
func (r *RedisURL) DialOptions() []redis.DialOption {
	opts := []redis.DialOption{
		redis.DialDatabase(r.DB),
		redis.DialConnectTimeout(5 * time.Second),
	}
	if r.Password != "" {
		opts = append(opts, redis.DialPassword(r.Password))
	}
	if r.Username != "" {
		opts = append(opts, redis.DialUsername(r.Username))
	}
	if r.TLS != nil {
		opts = append(opts, redis.DialUseTLS(true), redis.DialTLSConfig(r.TLS))
	}
	return opts
}

// NewPool returns a redigo pool for the URL. The caller owns it and closes it. maxActive bounds
// the open connections (0 = unbounded, redigo's default).
//
// For a sentinel:// URL each new connection asks the sentinels for the current master
// (SENTINEL get-master-addr-by-name) and checks with ROLE that it reached one; a connection that
// breaks or is answered READONLY is dropped, and so are the pool's idle connections to the old
// master, so the next one follows a failover without a restart. Without MasterName every dial
// fails with ErrInvalidURL.
func (r *RedisURL) NewPool(maxActive int) *redis.Pool {
	if len(r.Sentinels) > 0 {
		return r.newSentinelPool(maxActive)
	}
	opts := r.DialOptions()
	return &redis.Pool{
		MaxIdle:     max(8, maxActive),
		MaxActive:   maxActive,
		Wait:        maxActive > 0,
		IdleTimeout: 4 * time.Minute,
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, r.Network, r.Address, opts...)
		},
		TestOnBorrow: func(c redis.Conn, t time.Time) error {
			if time.Since(t) < time.Minute {
				return nil
			}
			return rdb.Ping(c)
		},
	}
}
