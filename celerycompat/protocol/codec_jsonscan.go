package protocol

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// JSON reading. Values decode to the model encoding/json gives with UseNumber (nil, bool,
// json.Number, string, []any, map[string]any), plus the Go types of kombu's {"__type__",
// "__value__"} markers: time.Time, Date, TimeOfDay, Decimal, UUID and []byte. Like Python's json
// module, NaN, Infinity and -Infinity are accepted (as json.Number), duplicate keys keep the last
// value, and nesting is limited (Python's recursion limit makes deeper input impossible anyway).

// maxNesting bounds array/object nesting on decode and encode alike, counted from the envelope
// (or value) root, so whatever decodes also encodes.
const maxNesting = 1000

// jsonScanner reads one JSON text held in s.
type jsonScanner struct {
	s     string
	i     int
	depth int
	// clone is set when s aliases memory the caller owns: strings that outlive the call are copied.
	clone bool
	// sawMarker records that a kombu marker was decoded.
	sawMarker bool
}

// keep returns s safe to retain after the call.
func (p *jsonScanner) keep(s string) string {
	if p.clone {
		return strings.Clone(s)
	}
	return s
}

func (p *jsonScanner) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonScanner) errf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", p.i, fmt.Sprintf(format, args...))
}

// unexpected reports the byte at the current position (or the end of input).
func (p *jsonScanner) unexpected(want string) error {
	if p.i >= len(p.s) {
		return p.errf("unexpected end of JSON input, want %s", want)
	}
	return p.errf("invalid character %q, want %s", p.s[p.i], want)
}

// end checks that only whitespace is left.
func (p *jsonScanner) end() error {
	p.ws()
	if p.i != len(p.s) {
		return p.errf("invalid character %q after the JSON value", p.s[p.i])
	}
	return nil
}

// peek skips whitespace and returns the next byte, 0 at the end.
func (p *jsonScanner) peek() byte {
	p.ws()
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *jsonScanner) literal(lit string) bool {
	if strings.HasPrefix(p.s[p.i:], lit) {
		p.i += len(lit)
		return true
	}
	return false
}

// null consumes a null literal if one is next.
func (p *jsonScanner) null() bool {
	return p.peek() == 'n' && p.literal("null")
}

func (p *jsonScanner) push() error {
	p.depth++
	if p.depth > maxNesting {
		return p.errf("nesting deeper than %d", maxNesting)
	}
	return nil
}

// object iterates over the members of the object that must come next; fn reads each value.
func (p *jsonScanner) object(fn func(key string) error) error {
	if p.peek() != '{' {
		return p.unexpected("'{'")
	}
	p.i++
	if err := p.push(); err != nil {
		return err
	}
	if p.peek() == '}' {
		p.i++
		p.depth--
		return nil
	}
	for {
		if p.peek() != '"' {
			return p.unexpected("object key")
		}
		k, err := p.str()
		if err != nil {
			return err
		}
		if p.peek() != ':' {
			return p.unexpected("':'")
		}
		p.i++
		if err := fn(k); err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			p.depth--
			return nil
		default:
			return p.unexpected("',' or '}'")
		}
	}
}

// array iterates over the elements of the array that must come next; fn reads each one.
func (p *jsonScanner) array(fn func() error) error {
	if p.peek() != '[' {
		return p.unexpected("'['")
	}
	p.i++
	if err := p.push(); err != nil {
		return err
	}
	if p.peek() == ']' {
		p.i++
		p.depth--
		return nil
	}
	for {
		if err := fn(); err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			p.depth--
			return nil
		default:
			return p.unexpected("',' or ']'")
		}
	}
}

// value reads any JSON value, converting kombu markers.
func (p *jsonScanner) value() (any, error) {
	switch c := p.peek(); {
	case c == '{':
		m := make(map[string]any)
		err := p.object(func(k string) error {
			v, err := p.value()
			m[p.keep(k)] = v
			return err
		})
		if err != nil {
			return nil, err
		}
		if len(m) == 2 {
			if t, ok := m["__type__"]; ok {
				if v, ok := m["__value__"]; ok {
					p.sawMarker = true
					out, err := decodeMarker(t, v)
					if err != nil {
						return nil, p.errf("kombu marker: %v", err)
					}
					return out, nil
				}
			}
		}
		return m, nil
	case c == '[':
		// Short arrays are gathered on the stack and copied once, at their final size.
		var buf [8]any
		var spill []any
		n := 0
		err := p.array(func() error {
			v, err := p.value()
			switch {
			case spill != nil:
				spill = append(spill, v)
			case n < len(buf):
				buf[n] = v
				n++
			default:
				spill = append(append(make([]any, 0, 4*len(buf)), buf[:]...), v)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		if spill != nil {
			return spill, nil
		}
		a := make([]any, n)
		copy(a, buf[:n])
		return a, nil
	case c == '"':
		s, err := p.str()
		return p.keep(s), err
	case c == 't' && p.literal("true"):
		return true, nil
	case c == 'f' && p.literal("false"):
		return false, nil
	case c == 'n' && p.literal("null"):
		return nil, nil
	case c == '-' || c >= '0' && c <= '9' || c == 'N' || c == 'I':
		n, err := p.number()
		return json.Number(p.keep(string(n))), err
	}
	return nil, p.unexpected("a JSON value")
}

// skip reads and validates one value (markers included) and returns its text.
func (p *jsonScanner) skip() (string, error) {
	p.ws()
	start := p.i
	if err := p.skipValue(); err != nil {
		return "", err
	}
	raw := p.s[start:p.i]
	if strings.Contains(raw, "__type__") || strings.Contains(raw, `\u`) {
		// A marker (possibly with escaped key text) must be valid: Python 5.3+ readers decode it.
		q := jsonScanner{s: raw, depth: p.depth}
		if _, err := q.value(); err != nil {
			return "", err
		}
	}
	return raw, nil
}

func (p *jsonScanner) skipValue() error {
	switch c := p.peek(); {
	case c == '{':
		return p.object(func(string) error { return p.skipValue() })
	case c == '[':
		return p.array(p.skipValue)
	case c == '"':
		_, err := p.str()
		return err
	case c == 't' && p.literal("true"), c == 'f' && p.literal("false"), c == 'n' && p.literal("null"):
		return nil
	case c == '-' || c >= '0' && c <= '9' || c == 'N' || c == 'I':
		_, err := p.number()
		return err
	}
	return p.unexpected("a JSON value")
}

// number reads a JSON number, or Python's NaN, Infinity, -Infinity. The result may alias p.s.
func (p *jsonScanner) number() (json.Number, error) {
	s, start := p.s, p.i
	i := p.i
	if strings.HasPrefix(s[i:], "NaN") {
		p.i += 3
		return "NaN", nil
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	if strings.HasPrefix(s[i:], "Infinity") {
		p.i = i + 8
		return json.Number(s[start:p.i]), nil
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	default:
		p.i = i
		return "", p.unexpected("a digit")
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || !isDigit(s[i]) {
			p.i = i
			return "", p.unexpected("a digit after '.'")
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || !isDigit(s[i]) {
			p.i = i
			return "", p.unexpected("a digit in the exponent")
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	p.i = i
	return json.Number(s[start:i]), nil
}

// str reads a string (the opening quote is next). The result may alias p.s; callers that keep it
// pass it through p.keep. Invalid UTF-8 and lone surrogates become U+FFFD, as in encoding/json.
func (p *jsonScanner) str() (string, error) {
	s := p.s
	start := p.i + 1
	i := start
	ascii := true
	for i < len(s) {
		c := s[i]
		if c == '"' {
			out := s[start:i]
			if ascii || utf8.ValidString(out) {
				p.i = i + 1
				return out, nil
			}
			break
		}
		if c == '\\' || c < 0x20 {
			break
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
		i++
	}
	return p.strSlow(start)
}

func (p *jsonScanner) strSlow(start int) (string, error) {
	s := p.s
	b := make([]byte, 0, len(s)-start)
	i := start
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			p.i = i + 1
			return unsafe.String(unsafe.SliceData(b), len(b)), nil
		case c < 0x20:
			p.i = i
			return "", p.errf("control character %q in string", c)
		case c == '\\':
			if i+1 >= len(s) {
				p.i = i
				return "", p.unexpected("an escape")
			}
			e := s[i+1]
			i += 2
			switch e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r, ok := hex4(s, i)
				if !ok {
					p.i = i
					return "", p.errf("bad \\u escape")
				}
				i += 4
				if utf16.IsSurrogate(r) {
					r2, ok := rune(-1), false
					if i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
						r2, ok = hex4(s, i+2)
					}
					if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				b = utf8.AppendRune(b, r)
			default:
				p.i = i - 1
				return "", p.errf("bad escape \\%c", e)
			}
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
			} else {
				b = append(b, s[i:i+n]...)
			}
			i += n
		}
	}
	p.i = i
	return "", p.unexpected("closing '\"'")
}

func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// stringView returns b as a string without copying. The caller must not change b afterwards.
func stringView(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// bytesView returns s as a byte slice without copying; it must not be written to.
func bytesView(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
