package protocol

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a Celery release, used to say which peer will read what we write. Wire details differ
// by version: kombu 5.3 added JSON value markers, Celery 5.3 added stamping headers, result
// date_done gained an offset in 5.4 and the app timezone in 5.5.
type Version struct{ Major, Minor, Patch int }

// Versions this package knows the wire differences of.
var (
	Celery52 = Version{5, 2, 0}
	Celery53 = Version{5, 3, 0}
	Celery54 = Version{5, 4, 0}
	Celery55 = Version{5, 5, 0}
)

// ParseVersion parses "5", "5.2" or "5.2.6".
func ParseVersion(s string) (Version, error) {
	var v Version
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) == 0 || len(parts) > 3 {
		return v, fmt.Errorf("%w: version %q", ErrInvalidConfig, s)
	}
	dst := []*int{&v.Major, &v.Minor, &v.Patch}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return Version{}, fmt.Errorf("%w: version %q", ErrInvalidConfig, s)
		}
		*dst[i] = n
	}
	return v, nil
}

// IsZero reports whether v is unset.
func (v Version) IsZero() bool { return v == Version{} }

// AtLeast reports whether v is o or newer. The zero Version is treated as Celery 5.2, the oldest
// peer we write for.
func (v Version) AtLeast(o Version) bool {
	if v.IsZero() {
		v = Celery52
	}
	if v.Major != o.Major {
		return v.Major > o.Major
	}
	if v.Minor != o.Minor {
		return v.Minor > o.Minor
	}
	return v.Patch >= o.Patch
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }
