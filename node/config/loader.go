package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment variable the loader reads.
const EnvPrefix = "LIVECLUSTER_"

// ReservedEnv are LIVECLUSTER_ variables that are not configuration keys and
// therefore not "unknown": the config file path, the tool paths the test
// and e2e scripts export (a binary started from such a script inherits them),
// and the drills' OCM call log.
var ReservedEnv = []string{
	"LIVECLUSTER_CONFIG",
	"LIVECLUSTER_FFMPEG",
	"LIVECLUSTER_FFPROBE",
	"LIVECLUSTER_GRPCURL",
	"LIVECLUSTER_HELM",
	"LIVECLUSTER_OCM_HISTORY", // ocmclient.HistoryEnv: the drills' call log
}

// Source is where a configuration comes from, apart from the defaults.
type Source struct {
	// File is the YAML file; empty means defaults, env and flags only.
	File string
	// Env is the environment as "KEY=value" pairs (os.Environ()).
	Env []string
	// Flags maps a key path ("grpc.listen") to the value of a flag that was
	// set on the command line. Flags that were not set must not appear.
	Flags map[string]string
}

// Loader loads a binary's configuration T, a struct that embeds Common
// inline. The zero value is not usable: set Defaults.
type Loader[T any] struct {
	// Defaults returns a fully defaulted T; it is the one place the
	// binary's defaults live. Typically it starts from DefaultCommon().
	Defaults func() T
	// Validate checks the binary's own keys (Common is checked by the
	// loader); errors should name the key ("grpc.listen: ...").
	Validate func(*T) error
	// Live lists the binary's keys that reload without a restart, in
	// addition to CommonLive. "a.*" matches every key under a.
	Live []string
}

// field is one leaf key of the configuration struct.
type field struct {
	path  string // key path, "shutdown.startWait"
	env   string // LIVECLUSTER_SHUTDOWN_START_WAIT
	index []int  // reflect field index path from the root struct
}

type schema struct {
	leaves   []field
	byPath   map[string]*field
	byEnv    map[string]*field
	branches map[string]bool // key paths of nested structs
}

var (
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
)

func buildSchema(t reflect.Type) (*schema, error) {
	s := &schema{byPath: map[string]*field{}, byEnv: map[string]*field{}, branches: map[string]bool{}}
	if err := s.walk(t, "", nil); err != nil {
		return nil, err
	}
	for i := range s.leaves {
		f := &s.leaves[i]
		if g, dup := s.byEnv[f.env]; dup {
			return nil, fmt.Errorf("config keys %s and %s map to the same env var %s", g.path, f.path, f.env)
		}
		s.byPath[f.path] = f
		s.byEnv[f.env] = f
	}
	return s, nil
}

func (s *schema) walk(t reflect.Type, prefix string, index []int) error {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		idx := append(append([]int(nil), index...), i)
		if strings.Contains(opts, "inline") {
			if sf.Type.Kind() != reflect.Struct {
				return fmt.Errorf("config: inline field %s is not a struct", sf.Name)
			}
			if err := s.walk(sf.Type, prefix, idx); err != nil {
				return err
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name) // yaml.v3's own default
		}
		path := prefix + name
		if isLeaf(sf.Type) {
			s.leaves = append(s.leaves, field{path: path, env: EnvName(path), index: idx})
			continue
		}
		s.branches[path] = true
		if err := s.walk(sf.Type, path+".", idx); err != nil {
			return err
		}
	}
	return nil
}

// isLeaf: anything that is not a plain nested struct is one key.
func isLeaf(t reflect.Type) bool {
	if t.Kind() != reflect.Struct {
		return true
	}
	p := reflect.PointerTo(t)
	return p.Implements(textUnmarshaler) || p.Implements(yamlUnmarshaler)
}

// EnvName returns the environment variable of a key path:
// "shutdown.startWait" → "LIVECLUSTER_SHUTDOWN_START_WAIT".
func EnvName(path string) string {
	var b strings.Builder
	b.WriteString(EnvPrefix)
	for i, part := range strings.Split(path, ".") {
		if i > 0 {
			b.WriteByte('_')
		}
		rs := []rune(part)
		for j, r := range rs {
			// A word starts at an upper-case letter that follows a lower-case
			// letter or digit, or that starts "Id" after an acronym ("HTTPListen"
			// → HTTP_LISTEN).
			if j > 0 && unicode.IsUpper(r) {
				prev := rs[j-1]
				nextLower := j+1 < len(rs) && unicode.IsLower(rs[j+1])
				if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
					b.WriteByte('_')
				}
			}
			if r == '-' {
				r = '_'
			}
			b.WriteRune(unicode.ToUpper(r))
		}
	}
	return b.String()
}

func (l *Loader[T]) schema() (*schema, error) {
	var zero T
	t := reflect.TypeOf(zero)
	if t == nil || t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("config: %T is not a struct", zero)
	}
	if _, ok := any(&zero).(HasCommon); !ok {
		return nil, fmt.Errorf("config: %T does not embed config.Common", zero)
	}
	return buildSchema(t)
}

// Keys returns every key path of T, sorted (for docs and tests).
func (l *Loader[T]) Keys() []string {
	s, err := l.schema()
	if err != nil {
		return nil
	}
	keys := make([]string, 0, len(s.leaves))
	for _, f := range s.leaves {
		keys = append(keys, f.path)
	}
	sort.Strings(keys)
	return keys
}

// Load builds the configuration from defaults, the file, the environment and
// flags, then validates it. The error names the file, key, env var or flag
// at fault.
func (l *Loader[T]) Load(src Source) (*T, error) {
	s, err := l.schema()
	if err != nil {
		return nil, err
	}
	if l.Defaults == nil {
		return nil, errors.New("config: Loader.Defaults is nil")
	}
	cfg := l.Defaults()
	root := reflect.ValueOf(&cfg).Elem()

	if src.File != "" {
		if err := loadFile(src.File, s, &cfg); err != nil {
			return nil, err
		}
	}
	if err := applyEnv(src.Env, s, root); err != nil {
		return nil, err
	}
	// Flags in a stable order so the first error is deterministic.
	paths := make([]string, 0, len(src.Flags))
	for p := range src.Flags {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		f, ok := s.byPath[p]
		if !ok {
			return nil, fmt.Errorf("flag for unknown config key %q", p)
		}
		if err := setString(root.FieldByIndex(f.index), src.Flags[p]); err != nil {
			return nil, fmt.Errorf("%s (flag): %w", p, err)
		}
	}
	if err := l.validate(&cfg); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (l *Loader[T]) validate(cfg *T) error {
	errs := []error{any(cfg).(HasCommon).CommonConfig().Validate()}
	if l.Validate != nil {
		errs = append(errs, l.Validate(cfg))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	return nil
}

func loadFile(path string, s *schema, out any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("parse config file %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty file means "all defaults"
	}
	// Our own pass first, so an unknown key is reported with its full path
	// (yaml.v3 only names the last segment and the Go type).
	if err := checkKeys(doc.Content[0], "", s); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

func checkKeys(n *yaml.Node, prefix string, s *schema) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		if prefix == "" {
			return fmt.Errorf("line %d: the top level must be a mapping of keys", n.Line)
		}
		return fmt.Errorf("line %d: %s: must be a mapping of keys", n.Line, strings.TrimSuffix(prefix, "."))
	}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := prefix + k.Value
		switch {
		case s.byPath[path] != nil:
		case s.branches[path]:
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				continue
			}
			if err := checkKeys(v, path+".", s); err != nil {
				errs = append(errs, err)
			}
		default:
			errs = append(errs, fmt.Errorf("line %d: unknown key %s", k.Line, path))
		}
	}
	return errors.Join(errs...)
}

func applyEnv(env []string, s *schema, root reflect.Value) error {
	reserved := map[string]bool{}
	for _, r := range ReservedEnv {
		reserved[r] = true
	}
	var errs []error
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) || reserved[k] {
			continue
		}
		f, known := s.byEnv[k]
		if !known {
			errs = append(errs, fmt.Errorf("unknown environment variable %s (no such config key)", k))
			continue
		}
		if err := setString(root.FieldByIndex(f.index), v); err != nil {
			errs = append(errs, fmt.Errorf("%s (env %s): %w", f.path, k, err))
		}
	}
	return errors.Join(errs...)
}

// setString parses a flag or env value into a leaf field. Lists are comma
// separated.
func setString(v reflect.Value, s string) error {
	if v.CanAddr() && v.Addr().Type().Implements(textUnmarshaler) {
		return v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s))
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("invalid boolean %q", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid unsigned integer %q", s)
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		n, err := strconv.ParseFloat(s, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		v.SetFloat(n)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("cannot be set from a string (type %s)", v.Type())
		}
		var parts []string
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts).Convert(v.Type()))
	default:
		return fmt.Errorf("cannot be set from a string (type %s)", v.Type())
	}
	return nil
}

// Merge returns the configuration to run after a reload: a copy of running
// with every live key taken from next. restartOnly lists the keys that
// changed but need a restart; they are NOT applied (the caller logs them as
// a warning). changed lists the live keys that did change.
func (l *Loader[T]) Merge(running, next *T) (merged *T, changed, restartOnly []string) {
	s, err := l.schema()
	if err != nil {
		return running, nil, nil
	}
	out := *running
	// The copy shares slices and maps with running; live leaves are replaced
	// whole below, never mutated in place, so that sharing is safe.
	ov, nv := reflect.ValueOf(&out).Elem(), reflect.ValueOf(next).Elem()
	for _, f := range s.leaves {
		a, b := ov.FieldByIndex(f.index), nv.FieldByIndex(f.index)
		if reflect.DeepEqual(a.Interface(), b.Interface()) {
			continue
		}
		if l.IsLive(f.path) {
			a.Set(b)
			changed = append(changed, f.path)
		} else {
			restartOnly = append(restartOnly, f.path)
		}
	}
	return &out, changed, restartOnly
}

// IsLive reports whether key path reloads without a restart.
func (l *Loader[T]) IsLive(path string) bool {
	for _, pat := range append(append([]string(nil), CommonLive...), l.Live...) {
		if pat == path {
			return true
		}
		if pre, ok := strings.CutSuffix(pat, "*"); ok && strings.HasPrefix(path, pre) {
			return true
		}
	}
	return false
}

// ValidListen checks a listen address "host:port" (host may be empty).
func ValidListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port, got %q", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid port in %q", addr)
	}
	return nil
}

// CommonOf returns the Common embedded in cfg.
func CommonOf[T any](cfg *T) *Common {
	return any(cfg).(HasCommon).CommonConfig()
}

// Value returns the value of key path in cfg as text (for --help defaults).
func (l *Loader[T]) Value(cfg *T, path string) (string, bool) {
	s, err := l.schema()
	if err != nil {
		return "", false
	}
	f, ok := s.byPath[path]
	if !ok {
		return "", false
	}
	v := reflect.ValueOf(cfg).Elem().FieldByIndex(f.index)
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		b, err := m.MarshalText()
		return string(b), err == nil
	}
	if v.Kind() == reflect.Slice {
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(v.Index(i).Interface())
		}
		return strings.Join(parts, ","), true
	}
	return fmt.Sprint(v.Interface()), true
}

// HasKey reports whether path is a key of T.
func (l *Loader[T]) HasKey(path string) bool {
	s, err := l.schema()
	return err == nil && s.byPath[path] != nil
}
