package celerycompat

import (
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"strings"
)

// A Typed argument struct declares the task's parameters the way a Python signature does:
// every exported field is a parameter named by its json tag (or its Go name without one). A
// field is required, as a Python parameter without a default is, unless its tag says omitempty
// or omitzero: then a missing argument leaves the field as it was (its zero value), Python's
// default. A field tagged "-" is not a parameter.

// param is one parameter of an argument struct.
type param struct {
	name     string
	required bool
	typ      reflect.Type
}

// structParams lists the parameters of struct type t in field order (embedded structs without
// a tag are flattened, as encoding/json does).
func structParams(t reflect.Type) []param {
	var out []param
	for i := range t.NumField() {
		f := t.Field(i)
		tag, hasTag := f.Tag.Lookup("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && !hasTag {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, structParams(ft)...)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		optional := false
		for o := range strings.SplitSeq(opts, ",") {
			optional = optional || o == "omitempty" || o == "omitzero"
		}
		out = append(out, param{name: name, required: !optional, typ: f.Type})
	}
	return out
}

// checkParams reports positional parameter names that T does not declare, so a typo fails
// Register instead of the first task.
func checkParams(t reflect.Type, params []string) error {
	if t.Kind() != reflect.Struct {
		return fmt.Errorf("argument type %s is not a struct", t)
	}
	known := map[string]bool{}
	for _, p := range structParams(t) {
		known[p.name] = true
	}
	seen := map[string]bool{}
	for _, p := range params {
		if !known[p] {
			return fmt.Errorf("parameter %q is not a json field of %s", p, t)
		}
		if seen[p] {
			return fmt.Errorf("parameter %q named twice", p)
		}
		seen[p] = true
	}
	return nil
}

// checkArgs does what Python does before calling a function: an unexpected keyword is a
// TypeError, so is a required parameter left without a value. It also checks that numbers fit
// their fields without a silent loss (see bindNumber).
func checkArgs(task string, t reflect.Type, params []string, merged map[string]any) error {
	fn := task
	if i := strings.LastIndexByte(fn, '.'); i >= 0 {
		fn = fn[i+1:]
	}
	fields := structParams(t)
	byName := make(map[string]param, len(fields))
	for _, p := range fields {
		byName[p.name] = p
	}
	for k := range merged {
		if _, ok := byName[k]; !ok {
			return fmt.Errorf("%s() got an unexpected keyword argument '%s'", fn, k)
		}
	}
	positional := map[string]bool{}
	for _, p := range params {
		positional[p] = true
	}
	var missPos, missKw []string
	for _, p := range params {
		if _, ok := merged[p]; !ok && byName[p].required {
			missPos = append(missPos, p)
		}
	}
	for _, p := range fields {
		if _, ok := merged[p.name]; !ok && p.required && !positional[p.name] {
			missKw = append(missKw, p.name)
		}
	}
	if len(missPos) > 0 {
		return missingError(fn, "positional", missPos)
	}
	if len(missKw) > 0 {
		return missingError(fn, "keyword-only", missKw)
	}
	for k, v := range merged {
		if err := checkNumbers(byName[k].typ, v); err != nil {
			return fmt.Errorf("argument '%s': %w", k, err)
		}
	}
	return nil
}

// missingError words a missing-argument error as Python does:
// "f() missing 2 required positional arguments: 'a' and 'b'".
func missingError(fn, kind string, names []string) error {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "'" + n + "'"
	}
	list := q[0]
	if len(q) > 1 {
		list = strings.Join(q[:len(q)-1], ", ") + " and " + q[len(q)-1]
	}
	s := "s"
	if len(q) == 1 {
		s = ""
	}
	return fmt.Errorf("%s() missing %d required %s argument%s: %s", fn, len(q), kind, s, list)
}

// checkNumbers walks v (a decoded argument) beside the Go type it binds to and refuses an
// integer bound to a float field that float64 cannot hold exactly: Python keeps 2**62+1 exact,
// a float64 would silently round it. Integer fields need no check here: encoding/json already
// refuses a fraction or an overflow, and *big.Int takes any integer.
func checkNumbers(t reflect.Type, v any) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return nil
	}
	switch x := v.(type) {
	case json.Number:
		if t.Kind() != reflect.Float64 && t.Kind() != reflect.Float32 {
			return nil
		}
		if strings.ContainsAny(string(x), ".eE") {
			return nil
		}
		n, ok := new(big.Int).SetString(string(x), 10)
		if !ok {
			return nil
		}
		f := new(big.Float).SetInt(n)
		if t.Kind() == reflect.Float32 {
			if _, acc := f.Float32(); acc != big.Exact {
				return fmt.Errorf("integer %s is not exact as float32", x)
			}
			return nil
		}
		if _, acc := f.Float64(); acc != big.Exact {
			return fmt.Errorf("integer %s is not exact as float64; bind it to int64, uint64 or *big.Int", x)
		}
	case []any:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for i, e := range x {
				if err := checkNumbers(t.Elem(), e); err != nil {
					return fmt.Errorf("[%d]: %w", i, err)
				}
			}
		}
	case map[string]any:
		switch t.Kind() {
		case reflect.Map:
			for k, e := range x {
				if err := checkNumbers(t.Elem(), e); err != nil {
					return fmt.Errorf("[%q]: %w", k, err)
				}
			}
		case reflect.Struct:
			fields := map[string]reflect.Type{}
			for _, p := range structParams(t) {
				fields[p.name] = p.typ
			}
			for k, e := range x {
				if ft, ok := fields[k]; ok {
					if err := checkNumbers(ft, e); err != nil {
						return fmt.Errorf(".%s: %w", k, err)
					}
				}
			}
		}
	}
	return nil
}

// pyNumber gives a number bound to an interface the Go type that keeps its Python meaning: an
// integer is an int64 when it fits and a *big.Int when it does not (Python ints are unbounded),
// anything else a float64.
func pyNumber(n json.Number) any {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		if i, err := n.Int64(); err == nil {
			return i
		}
		if b, ok := new(big.Int).SetString(s, 10); ok {
			return b
		}
	}
	f, err := n.Float64()
	if err != nil {
		return n
	}
	return f
}

// pyValue applies pyNumber through lists and dicts.
func pyValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		return pyNumber(x)
	case []any:
		for i, e := range x {
			x[i] = pyValue(e)
		}
	case map[string]any:
		for k, e := range x {
			x[k] = pyValue(e)
		}
	}
	return v
}

// normalizeAny replaces the json.Number values that decoding left in interface-typed places of
// v (fields, slice elements, map values) by pyNumber's Go types.
func normalizeAny(v reflect.Value) {
	switch v.Kind() {
	case reflect.Interface:
		if !v.IsNil() && v.CanSet() {
			v.Set(reflect.ValueOf(pyValue(v.Interface())))
		}
	case reflect.Pointer:
		if !v.IsNil() {
			normalizeAny(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				normalizeAny(v.Field(i))
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			normalizeAny(v.Index(i))
		}
	case reflect.Map:
		if v.Type().Elem().Kind() == reflect.Interface {
			for _, k := range v.MapKeys() {
				if e := v.MapIndex(k); !e.IsNil() {
					v.SetMapIndex(k, reflect.ValueOf(pyValue(e.Interface())))
				}
			}
			return
		}
		for _, k := range v.MapKeys() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(k))
			normalizeAny(e)
			v.SetMapIndex(k, e)
		}
	}
}
