package protocol

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Python text formats: datetime.isoformat() output and what datetime.fromisoformat() reads, the
// text of date, time, Decimal and UUID values in kombu's JSON markers, and float repr().

// naiveLoc marks times decoded from naive Python datetimes (text without a UTC offset). They are
// UTC for every computation, as Celery reads them, and are written back without an offset, so a
// Python reader gets a naive datetime again (Python refuses to compare naive and aware ones).
// It is never modified.
var naiveLoc = time.FixedZone("naive UTC", 0)

// Naive returns t in UTC marked as naive: PyISOFormat and the codec write it without an offset,
// as Python's isoformat() writes a naive datetime.
func Naive(t time.Time) time.Time { return t.In(naiveLoc) }

// IsNaive reports whether t came from (or was marked as) a naive Python datetime.
func IsNaive(t time.Time) bool { return t.Location() == naiveLoc }

// PyISOFormat formats t the way Python's datetime.isoformat() formats an aware datetime:
// "2026-11-26T01:02:07.499966+00:00". The fraction is written only when the microsecond is not
// zero (sub-microsecond digits are dropped, as Python has none), and the offset gains ":SS" only
// when it has seconds. The offset is t's own; UTC is written "+00:00".
func PyISOFormat(t time.Time) string {
	var buf [40]byte
	return string(AppendPyISO(buf[:0], t))
}

// AppendPyISO appends PyISOFormat(t) to b.
func AppendPyISO(b []byte, t time.Time) []byte {
	y, mo, d := t.Date()
	b = appendPyDate(b, y, mo, d)
	b = append(b, 'T')
	h, mi, s := t.Clock()
	b = appendDigits(b, h, 2)
	b = append(b, ':')
	b = appendDigits(b, mi, 2)
	b = append(b, ':')
	b = appendDigits(b, s, 2)
	if us := t.Nanosecond() / 1000; us != 0 {
		b = append(b, '.')
		b = appendDigits(b, us, 6)
	}
	if t.Location() == naiveLoc {
		return b
	}
	_, off := t.Zone()
	return appendPyOffset(b, off)
}

func appendPyOffset(b []byte, off int) []byte {
	if off < 0 {
		b = append(b, '-')
		off = -off
	} else {
		b = append(b, '+')
	}
	b = appendDigits(b, off/3600, 2)
	b = append(b, ':')
	b = appendDigits(b, off/60%60, 2)
	if off%60 != 0 {
		b = append(b, ':')
		b = appendDigits(b, off%60, 2)
	}
	return b
}

func appendPyDate(b []byte, y int, mo time.Month, d int) []byte {
	if y < 0 {
		b = append(b, '-')
		y = -y
	}
	b = appendDigits(b, y, 4)
	b = append(b, '-')
	b = appendDigits(b, int(mo), 2)
	b = append(b, '-')
	return appendDigits(b, d, 2)
}

// appendDigits appends n (>= 0) zero-padded to at least width digits.
func appendDigits(b []byte, n, width int) []byte {
	var tmp [20]byte
	i := len(tmp)
	for n >= 10 || width > 1 {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
		width--
	}
	i--
	tmp[i] = byte('0' + n)
	return append(b, tmp[i:]...)
}

// pyTimeRangeOK reports whether Python's datetime can hold t: years 1 to 9999 and an offset
// under 24 hours.
func pyTimeRangeOK(t time.Time) bool {
	y := t.Year()
	_, off := t.Zone()
	return y >= 1 && y <= 9999 && off > -86400 && off < 86400
}

// ParsePyTime parses the datetime text Celery and kombu write: Python's isoformat() with or without
// a UTC offset ("+05:30", "+0530", "+05", "+05:30:15", "Z"), 'T' or a space between date and time,
// seconds optional, and a fraction of 1 to 9 digits (kept to microseconds, like Python 3.11). A
// date alone means midnight. Text without an offset (a naive datetime) is taken as UTC, as Celery
// does for protocol 2 messages, and marked naive (see Naive). The result's location is time.UTC
// for "Z" or a zero offset, otherwise a fixed zone with the parsed offset. Errors wrap ErrDecode.
func ParsePyTime(s string) (time.Time, error) {
	t, err := parsePyTime(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: time %q: %v", ErrDecode, s, err)
	}
	return t, nil
}

func parsePyTime(s string) (time.Time, error) {
	if len(s) < 10 {
		return time.Time{}, errors.New("too short for YYYY-MM-DD")
	}
	y, mo, d, err := parsePyDate(s[:10])
	if err != nil {
		return time.Time{}, err
	}
	rest := s[10:]
	if rest == "" {
		return time.Date(y, mo, d, 0, 0, 0, 0, time.UTC), nil
	}
	if c := rest[0]; c != 'T' && c != 't' && c != ' ' {
		return time.Time{}, fmt.Errorf("unexpected %q after the date", c)
	}
	h, mi, sec, ns, rest, err := parseClock(rest[1:])
	if err != nil {
		return time.Time{}, err
	}
	loc, err := parseOffset(rest)
	if err != nil {
		return time.Time{}, err
	}
	return time.Date(y, mo, d, h, mi, sec, ns, loc), nil
}

func parsePyDate(s string) (int, time.Month, int, error) {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return 0, 0, 0, errors.New("date is not YYYY-MM-DD")
	}
	y, ok1 := atoiFixed(s[0:4])
	mo, ok2 := atoiFixed(s[5:7])
	d, ok3 := atoiFixed(s[8:10])
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, 0, errors.New("date is not YYYY-MM-DD")
	}
	if y < 1 || mo < 1 || mo > 12 || d < 1 || d > daysIn(time.Month(mo), y) {
		return 0, 0, 0, errors.New("date out of range")
	}
	return y, time.Month(mo), d, nil
}

func daysIn(m time.Month, y int) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// atoiFixed parses a string of ASCII digits only.
func atoiFixed(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, len(s) > 0
}

// parseClock reads HH[:MM[:SS[.f...]]] and returns what follows.
func parseClock(s string) (h, mi, sec, ns int, rest string, err error) {
	two := func(what string, lim int) (int, error) {
		if len(s) < 2 {
			return 0, fmt.Errorf("missing %s", what)
		}
		n, ok := atoiFixed(s[:2])
		if !ok || n >= lim {
			return 0, fmt.Errorf("bad %s", what)
		}
		s = s[2:]
		return n, nil
	}
	if h, err = two("hour", 24); err != nil {
		return
	}
	if len(s) > 0 && s[0] == ':' {
		s = s[1:]
		if mi, err = two("minute", 60); err != nil {
			return
		}
		if len(s) > 0 && s[0] == ':' {
			s = s[1:]
			if sec, err = two("second", 60); err != nil {
				return
			}
			if len(s) > 0 && (s[0] == '.' || s[0] == ',') {
				s = s[1:]
				n := 0
				for n < len(s) && s[n] >= '0' && s[n] <= '9' {
					n++
				}
				if n == 0 || n > 9 {
					err = errors.New("fraction must have 1 to 9 digits")
					return
				}
				frac := s[:n]
				if len(frac) > 6 {
					frac = frac[:6]
				}
				us, _ := atoiFixed(frac)
				for i := len(frac); i < 6; i++ {
					us *= 10
				}
				ns = us * 1000
				s = s[n:]
			}
		}
	}
	return h, mi, sec, ns, s, nil
}

// parseOffset reads "", "Z" or [+-]HH[[:]MM[:SS]]; zero and absent offsets give time.UTC.
func parseOffset(s string) (*time.Location, error) {
	if s == "" {
		return naiveLoc, nil
	}
	if s == "Z" || s == "z" {
		return time.UTC, nil
	}
	if s[0] != '+' && s[0] != '-' {
		return nil, fmt.Errorf("unexpected %q after the time", s)
	}
	body := s[1:]
	var h, m, sec int
	var ok bool
	switch {
	case len(body) == 2:
		h, ok = atoiFixed(body)
	case len(body) == 4:
		h, ok = atoiFixed(body[:2])
		if ok {
			m, ok = atoiFixed(body[2:])
		}
	case len(body) == 5 && body[2] == ':':
		h, ok = atoiFixed(body[:2])
		if ok {
			m, ok = atoiFixed(body[3:])
		}
	case len(body) == 8 && body[2] == ':' && body[5] == ':':
		h, ok = atoiFixed(body[:2])
		if ok {
			m, ok = atoiFixed(body[3:5])
		}
		if ok {
			sec, ok = atoiFixed(body[6:])
		}
	}
	if !ok || h >= 24 || m >= 60 || sec >= 60 {
		return nil, fmt.Errorf("bad UTC offset %q", s)
	}
	off := h*3600 + m*60 + sec
	if off == 0 {
		return time.UTC, nil
	}
	if s[0] == '-' {
		off = -off
	}
	return time.FixedZone("", off), nil
}

// checkTimeOfDay validates Python time.isoformat() text: HH[:MM[:SS[.f]]] and an optional offset.
func checkTimeOfDay(s string) error {
	_, _, _, _, rest, err := parseClock(s)
	if err != nil {
		return err
	}
	_, err = parseOffset(rest)
	return err
}

func (d Date) valid() bool {
	return d.Year >= 1 && d.Year <= 9999 && d.Month >= 1 && d.Month <= 12 &&
		d.Day >= 1 && d.Day <= daysIn(d.Month, d.Year)
}

// checkDecimal validates text Python's decimal.Decimal() accepts: an optional sign, digits with an
// optional point and exponent, or Infinity/Inf/NaN/sNaN (any case), surrounding spaces allowed.
func checkDecimal(s string) error {
	t := strings.TrimSpace(s)
	if t != "" && (t[0] == '+' || t[0] == '-') {
		t = t[1:]
	}
	lower := strings.ToLower(t)
	if lower == "inf" || lower == "infinity" {
		return nil
	}
	if strings.HasPrefix(lower, "nan") || strings.HasPrefix(lower, "snan") {
		diag := strings.TrimPrefix(strings.TrimPrefix(lower, "s"), "nan")
		if _, ok := atoiFixed(diag); ok || diag == "" {
			return nil
		}
		return fmt.Errorf("bad decimal %q", s)
	}
	digits := 0
	i := 0
	for i < len(t) && (isDigit(t[i]) || t[i] == '_' && i > 0 && i+1 < len(t) && isDigit(t[i+1])) {
		digits++
		i++
	}
	if i < len(t) && t[i] == '.' {
		i++
		for i < len(t) && isDigit(t[i]) {
			digits++
			i++
		}
	}
	if digits == 0 {
		return fmt.Errorf("bad decimal %q", s)
	}
	if i < len(t) && (t[i] == 'e' || t[i] == 'E') {
		i++
		if i < len(t) && (t[i] == '+' || t[i] == '-') {
			i++
		}
		start := i
		for i < len(t) && isDigit(t[i]) {
			i++
		}
		if i == start {
			return fmt.Errorf("bad decimal %q", s)
		}
	}
	if i != len(t) {
		return fmt.Errorf("bad decimal %q", s)
	}
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// uuidHex reduces UUID text to 32 lowercase hex digits the way Python's uuid.UUID(hex=...) does:
// "urn:" and "uuid:" prefixes, braces and hyphens are dropped.
func uuidHex(s string) (string, error) {
	t := strings.ReplaceAll(strings.ReplaceAll(s, "urn:", ""), "uuid:", "")
	t = strings.ReplaceAll(strings.Trim(t, "{}"), "-", "")
	if len(t) != 32 {
		return "", fmt.Errorf("bad UUID %q", s)
	}
	var out [32]byte
	for i := 0; i < 32; i++ {
		c := t[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			c += 'a' - 'A'
		default:
			return "", fmt.Errorf("bad UUID %q", s)
		}
		out[i] = c
	}
	return string(out[:]), nil
}

// canonicalUUID formats 32 hex digits as 8-4-4-4-12.
func canonicalUUID(hex string) UUID {
	return UUID(hex[0:8] + "-" + hex[8:12] + "-" + hex[12:16] + "-" + hex[16:20] + "-" + hex[20:32])
}

// uuidSetVersion applies Python's uuid.UUID(version=n) rule: RFC 4122 variant and version n.
func uuidSetVersion(hex string, version int) string {
	const digits = "0123456789abcdef"
	b := []byte(hex)
	b[12] = digits[version&0xf]
	b[16] = digits[strings.IndexByte(digits, b[16])&0x3|0x8]
	return string(b)
}

// AppendPyFloat appends f the way Python's float repr() (and so json.dumps) writes it: the
// shortest round-tripping digits, fixed notation with at least one decimal for exponents -4..15,
// else d.ddde+XX; NaN, Infinity and -Infinity as Python's json module writes them.
func AppendPyFloat(b []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, 1):
		return append(b, "Infinity"...)
	case math.IsInf(f, -1):
		return append(b, "-Infinity"...)
	}
	var tmp [32]byte
	e := strconv.AppendFloat(tmp[:0], f, 'e', -1, bits) // -d.dddde±XX
	neg := e[0] == '-'
	if neg {
		e = e[1:]
	}
	ei := 0
	for e[ei] != 'e' {
		ei++
	}
	var dbuf [24]byte
	digits := dbuf[:0]
	for _, c := range e[:ei] {
		if c != '.' {
			digits = append(digits, c)
		}
	}
	exp, _ := strconv.Atoi(string(e[ei+1:]))
	if neg {
		b = append(b, '-')
	}
	if exp < -4 || exp >= 16 {
		b = append(b, digits[0])
		if len(digits) > 1 {
			b = append(b, '.')
			b = append(b, digits[1:]...)
		}
		b = append(b, 'e')
		if exp < 0 {
			b = append(b, '-')
			exp = -exp
		} else {
			b = append(b, '+')
		}
		return appendDigits(b, exp, 2)
	}
	if exp < 0 {
		b = append(b, "0."...)
		for i := -1; i > exp; i-- {
			b = append(b, '0')
		}
		return append(b, digits...)
	}
	if len(digits) <= exp+1 {
		b = append(b, digits...)
		for i := len(digits); i <= exp; i++ {
			b = append(b, '0')
		}
		return append(b, ".0"...)
	}
	b = append(b, digits[:exp+1]...)
	b = append(b, '.')
	return append(b, digits[exp+1:]...)
}
