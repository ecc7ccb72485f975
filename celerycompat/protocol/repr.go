package protocol

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// reprMaxSize is Celery's argsrepr_maxsize / kwargsrepr_maxsize.
const reprMaxSize = 1024

// PyRepr renders v the way Python's repr() shows the equivalent Python value, as Celery does for
// the argsrepr/kwargsrepr headers and for event fields. Map keys are sorted (Go maps have no
// insertion order). The result is cut to Celery's 1024 characters with "..." like saferepr.
func PyRepr(v any) string { return TruncRepr(PyReprFull(v)) }

// ArgsRepr renders positional args as a Python tuple: "(2, 3)", "(1,)", "()".
func ArgsRepr(args []any) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, a := range args {
		if i > 0 {
			b.WriteString(", ")
		}
		writeRepr(&b, a)
		if b.Len() > reprMaxSize {
			break
		}
	}
	if len(args) == 1 {
		b.WriteByte(',')
	}
	b.WriteByte(')')
	return TruncRepr(b.String())
}

// TruncRepr cuts a repr to Celery's 1024 characters with "..." as saferepr does.
func TruncRepr(s string) string {
	if len(s) <= reprMaxSize {
		return s
	}
	cut := reprMaxSize - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// PyReprFull is PyRepr without the length limit.
func PyReprFull(v any) string {
	var b strings.Builder
	writeRepr(&b, v)
	return b.String()
}

func writeRepr(b *strings.Builder, v any) {
	if b.Len() > 4*reprMaxSize { // enough to truncate; stop walking huge values
		return
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("None")
	case bool:
		if x {
			b.WriteString("True")
		} else {
			b.WriteString("False")
		}
	case string:
		writeStrRepr(b, x)
	case json.Number:
		if _, err := strconv.ParseInt(string(x), 10, 64); err == nil || !strings.ContainsAny(string(x), ".eE") {
			b.WriteString(string(x))
		} else if f, err := x.Float64(); err == nil {
			b.WriteString(PyFloatRepr(f))
		} else {
			b.WriteString(string(x))
		}
	case float64:
		b.WriteString(PyFloatRepr(x))
	case float32:
		b.WriteString(PyFloatRepr(float64(x)))
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		fmt.Fprint(b, x)
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			writeRepr(b, e)
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			writeStrRepr(b, k)
			b.WriteString(": ")
			writeRepr(b, x[k])
		}
		b.WriteByte('}')
	case []byte:
		b.WriteByte('b')
		writeStrRepr(b, string(x))
	case time.Time:
		fmt.Fprintf(b, "datetime.datetime.fromisoformat(%s)", strconv.Quote(PyISOFormat(x)))
	case Decimal:
		fmt.Fprintf(b, "Decimal('%s')", string(x))
	case UUID:
		fmt.Fprintf(b, "UUID('%s')", string(x))
	default:
		// Anything else: its JSON form read as a Python value.
		raw, err := json.Marshal(x)
		if err != nil {
			fmt.Fprintf(b, "<%T>", x)
			return
		}
		var generic any
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.UseNumber()
		if dec.Decode(&generic) != nil {
			fmt.Fprintf(b, "<%T>", x)
			return
		}
		writeRepr(b, generic)
	}
}

// PyFloatRepr is Python's repr() of a float.
func PyFloatRepr(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	if f != 0 {
		exp := math.Floor(math.Log10(math.Abs(f)))
		if exp < -4 || exp >= 16 {
			return strconv.FormatFloat(f, 'e', -1, 64)
		}
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s
}

// writeStrRepr quotes s like Python's str.__repr__: single quotes unless s holds a single quote
// and no double quote.
func writeStrRepr(b *strings.Builder, s string) {
	q := byte('\'')
	if strings.IndexByte(s, '\'') >= 0 && strings.IndexByte(s, '"') < 0 {
		q = '"'
	}
	b.WriteByte(q)
	for _, r := range s {
		switch {
		case r == rune(q) || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == utf8.RuneError:
			b.WriteString(`\ufffd`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(b, `\x%02x`, r)
		case r > 0x7f && !unicode.IsPrint(r):
			if r <= 0xff {
				fmt.Fprintf(b, `\x%02x`, r)
			} else if r <= 0xffff {
				fmt.Fprintf(b, `\u%04x`, r)
			} else {
				fmt.Fprintf(b, `\U%08x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(q)
}
