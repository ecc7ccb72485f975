package callback

import (
	"fmt"
	"net/url"
	"path"
	"strings"
)

// allowList decides which destination URLs the outbox may send to: the default URL exactly, and
// the configured entries. An entry whose path is empty or ends in "/" is a prefix: it allows every
// URL with the same scheme and host (port included, host compared case-insensitively) whose path
// lies under it. Any other entry allows exactly that URL (scheme, host, path and query). Matching
// is structural, never a string prefix, so "https://hooks.example.com" does not allow
// "https://hooks.example.com.evil.net/"; URLs with user info, fragments, or dot segments in their
// path are refused outright.
type allowList struct {
	entries []allowEntry
}

type allowEntry struct {
	scheme, host, path, query string
	prefix                    bool
}

// newAllowList parses defaultURL (may be empty) and entries.
func newAllowList(defaultURL string, entries []string) (allowList, error) {
	var l allowList
	add := func(raw string, exact bool) error {
		u, err := parseDestination(raw)
		if err != nil {
			return err
		}
		e := allowEntry{scheme: u.Scheme, host: strings.ToLower(u.Host), path: u.EscapedPath(), query: u.RawQuery}
		e.prefix = !exact && (e.path == "" || strings.HasSuffix(e.path, "/"))
		if e.prefix && e.path == "" {
			e.path = "/"
		}
		l.entries = append(l.entries, e)
		return nil
	}
	if defaultURL != "" {
		if err := add(defaultURL, true); err != nil {
			return l, fmt.Errorf("%w: URL: %w", ErrInvalidConfig, err)
		}
	}
	for _, raw := range entries {
		if err := add(raw, false); err != nil {
			return l, fmt.Errorf("%w: AllowedURLs: %w", ErrInvalidConfig, err)
		}
	}
	return l, nil
}

// check returns nil when raw may be sent to, else a *URLError.
func (l allowList) check(raw string) error {
	u, err := parseDestination(raw)
	if err != nil {
		return err
	}
	host, p := strings.ToLower(u.Host), u.EscapedPath()
	if p == "" {
		p = "/"
	}
	for _, e := range l.entries {
		if e.scheme != u.Scheme || e.host != host {
			continue
		}
		if e.prefix {
			if strings.HasPrefix(p, e.path) {
				return nil
			}
			continue
		}
		ep := e.path
		if ep == "" {
			ep = "/"
		}
		if ep == p && e.query == u.RawQuery {
			return nil
		}
	}
	return &URLError{URL: raw, Reason: "matches neither the default URL nor an allow-list entry"}
}

// parseDestination parses an absolute http(s) URL and refuses the forms that make allow-listing
// ambiguous.
func parseDestination(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, &URLError{URL: raw, Reason: err.Error()}
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, &URLError{URL: raw, Reason: "scheme must be http or https"}
	case u.Host == "" || u.Hostname() == "":
		return nil, &URLError{URL: raw, Reason: "no host"}
	case u.User != nil:
		return nil, &URLError{URL: raw, Reason: "user info is not allowed"}
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, &URLError{URL: raw, Reason: "fragment is not allowed"}
	case u.Opaque != "":
		return nil, &URLError{URL: raw, Reason: "opaque URL"}
	}
	if p := u.Path; p != "" {
		clean := path.Clean(p)
		if strings.HasSuffix(p, "/") && clean != "/" {
			clean += "/"
		}
		if clean != p || strings.Contains(u.EscapedPath(), "%2e") || strings.Contains(u.EscapedPath(), "%2E") {
			return nil, &URLError{URL: raw, Reason: "path has dot segments or repeated slashes"}
		}
	}
	return u, nil
}
