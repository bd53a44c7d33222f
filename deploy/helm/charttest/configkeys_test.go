package charttest

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestSchemaConfigKeysMatchBinaries: the schema of each component's
// `config` value lists exactly the binary's config keys (read from the Go
// structs' yaml tags), except the keys the chart owns. A key added to a
// binary and not to the schema would be refused by helm; a key in the
// schema that the binary lacks would pass helm and crash the pod.
func TestSchemaConfigKeysMatchBinaries(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	common := []string{"node/config/common.go", "node/config/limits.go", "node/config/security.go"}
	for _, c := range []struct {
		component string
		files     []string
		root      string
		chartOwns []string
	}{
		{"ocm", append(common, "ocm/cmd/ocm/main.go"), "Config",
			[]string{"etcd.endpoints", "etcd.dataDir", "etcd.clientURL", "etcd.peerURL", "etcd.caFile", "etcd.certFile", "etcd.keyFile"}},
		{"origin", append(common, "node/config/auth.go", "origin/internal/config/config.go"), "Config", nil},
		{"edge", append(common, "node/config/auth.go", "edge/internal/app/config.go"), "Config", nil},
	} {
		goKeys := structKeys(t, c.files, c.root)
		goKeys = slices.DeleteFunc(goKeys, func(k string) bool { return slices.Contains(c.chartOwns, k) })
		var schemaKeys []string
		schemaLeaves(dig(schema, "properties", c.component, "properties", "config"), "", &schemaKeys)
		slices.Sort(goKeys)
		slices.Sort(schemaKeys)
		if !reflect.DeepEqual(goKeys, schemaKeys) {
			t.Errorf("%s: values.schema.json config keys differ from the binary's\n only in Go:     %v\n only in schema: %v",
				c.component, minus(goKeys, schemaKeys), minus(schemaKeys, goKeys))
		}
	}
}

func minus(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

func schemaLeaves(node any, prefix string, out *[]string) {
	props, ok := dig(node, "properties").(map[string]any)
	if !ok {
		*out = append(*out, strings.TrimPrefix(prefix, "."))
		return
	}
	for k, v := range props {
		schemaLeaves(v, prefix+"."+k, out)
	}
}

// structKeys returns the yaml key paths of the struct type root, declared
// in files (relative to the repository); struct fields of types declared in
// those files are followed (an `yaml:",inline"` one adds its keys at the
// same level), any other type is a leaf (durations, sizes, lists).
func structKeys(t *testing.T, files []string, root string) []string {
	t.Helper()
	types := map[string]*ast.StructType{}
	for _, f := range files {
		file, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, f), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if ts, ok := n.(*ast.TypeSpec); ok {
				if st, ok := ts.Type.(*ast.StructType); ok {
					types[ts.Name.Name] = st
				}
			}
			return true
		})
	}
	var out []string
	var walk func(st *ast.StructType, prefix string)
	walk = func(st *ast.StructType, prefix string) {
		for _, f := range st.Fields.List {
			tag := ""
			if f.Tag != nil {
				raw, _ := strconv.Unquote(f.Tag.Value)
				tag = reflect.StructTag(raw).Get("yaml")
			}
			name, opts, _ := strings.Cut(tag, ",")
			var sub *ast.StructType
			switch ty := f.Type.(type) {
			case *ast.StructType:
				sub = ty
			case *ast.Ident:
				sub = types[ty.Name]
			case *ast.SelectorExpr: // config.Common, config.Limits, config.Auth, config.OCMSecurity, ...
				sub = types[ty.Sel.Name]
			}
			if opts == "inline" && sub != nil {
				walk(sub, prefix)
				continue
			}
			if name == "" || name == "-" {
				continue
			}
			if sub != nil {
				walk(sub, prefix+name+".")
				continue
			}
			out = append(out, prefix+name)
		}
	}
	st := types[root]
	if st == nil {
		t.Fatalf("no struct %s in %v", root, files)
	}
	walk(st, "")
	return out
}
