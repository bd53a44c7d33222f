package charttest

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const (
	chartDir    = "../livecluster"
	repoRoot    = "../../.."
	kubeVersion = "1.34.2"
	release     = "lc"
	namespace   = "media"
)

func helmBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("LIVECLUSTER_HELM"); p != "" {
		return p
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("helm not found: set LIVECLUSTER_HELM (scripts/test-chart.sh builds it)")
	}
	t.Skip("helm not found: set LIVECLUSTER_HELM (scripts/test-chart.sh builds it)")
	return ""
}

// object is one rendered Kubernetes object.
type object map[string]any

func (o object) kind() string { return str(o["kind"]) }
func (o object) name() string { return str(dig(o, "metadata", "name")) }

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// dig walks maps by key and lists by decimal index; nil when absent.
func dig(v any, path ...string) any {
	for _, p := range path {
		switch c := v.(type) {
		case map[string]any:
			v = c[p]
		case object:
			v = c[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(c) {
				return nil
			}
			v = c[i]
		default:
			return nil
		}
	}
	return v
}

type rendered []object

// render runs helm template with args (--set ..., -f ...) and parses the
// output; a helm error is returned with its stderr.
func render(t *testing.T, args ...string) (rendered, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), append([]string{"template", release, chartDir,
		"--namespace", namespace, "--kube-version", kubeVersion}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm template %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	var out rendered
	dec := yaml.NewDecoder(&stdout)
	for {
		var o map[string]any
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("parse helm template output: %v", err)
		}
		if o != nil {
			out = append(out, object(o))
		}
	}
	return out, nil
}

func mustRender(t *testing.T, args ...string) rendered {
	t.Helper()
	r, err := render(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r rendered) get(t *testing.T, kind, name string) object {
	t.Helper()
	if o := r.find(kind, name); o != nil {
		return o
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

func (r rendered) find(kind, name string) object {
	for _, o := range r {
		if o.kind() == kind && o.name() == name {
			return o
		}
	}
	return nil
}

// workloads are the ocm, origin and edge pod owners of the default render.
var workloads = []struct{ kind, name, component string }{
	{"Deployment", "lc-livecluster-ocm", "ocm"},
	{"StatefulSet", "lc-livecluster-origin", "origin"},
	{"Deployment", "lc-livecluster-edge", "edge"},
}

func container(o object) map[string]any {
	c, _ := dig(o, "spec", "template", "spec", "containers", "0").(map[string]any)
	return c
}

func checksum(r rendered, t *testing.T, kind, name string) string {
	return str(dig(r.get(t, kind, name), "spec", "template", "metadata", "annotations", "checksum/config"))
}

func grace(r rendered, t *testing.T, kind, name string) int {
	v := dig(r.get(t, kind, name), "spec", "template", "spec", "terminationGracePeriodSeconds")
	n, ok := v.(int)
	if !ok {
		t.Fatalf("%s %s: terminationGracePeriodSeconds = %#v", kind, name, v)
	}
	return n
}

func configOf(t *testing.T, r rendered, component string) map[string]any {
	t.Helper()
	cm := r.get(t, "ConfigMap", "lc-livecluster-"+component)
	var c map[string]any
	if err := yaml.Unmarshal([]byte(str(dig(cm, "data", "config.yaml"))), &c); err != nil {
		t.Fatalf("%s config.yaml: %v", component, err)
	}
	return c
}

func valuesFiles(t *testing.T) []string {
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values files in %s/ci: %v", chartDir, err)
	}
	return append([]string{""}, files...) // "": the chart's defaults
}

// TestEveryValuesFile renders the chart with the defaults and each ci/
// values file and checks what every livecluster pod must have.
func TestEveryValuesFile(t *testing.T) {
	for _, f := range valuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var args []string
			if f != "" {
				args = []string{"-f", f}
			}
			r := mustRender(t, append(args, "--set", "global.image.tag=v9.9.9", "--set", "global.image.pullPolicy=Never")...)
			for _, w := range workloads {
				o := r.get(t, w.kind, w.name)
				c := container(o)
				if img := str(c["image"]); img != "livecluster/"+w.component+":v9.9.9" {
					t.Errorf("%s: image %s, want the global tag", w.name, img)
				}
				if p := str(c["imagePullPolicy"]); p != "Never" {
					t.Errorf("%s: imagePullPolicy %s", w.name, p)
				}
				if p := str(dig(c, "livenessProbe", "httpGet", "path")); p != "/healthz" {
					t.Errorf("%s: liveness path %q, want /healthz (never a check that depends on the OCM or etcd)", w.name, p)
				}
				if p := str(dig(c, "startupProbe", "httpGet", "path")); p != "/healthz" {
					t.Errorf("%s: startup path %q, want /healthz", w.name, p)
				}
				if p := str(dig(c, "readinessProbe", "httpGet", "path")); p != "/readyz" {
					t.Errorf("%s: readiness path %q, want /readyz", w.name, p)
				}
				for _, probe := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
					if p := str(dig(c, probe, "httpGet", "port")); p != "admin" {
						t.Errorf("%s: %s port %q, want admin", w.name, probe, p)
					}
				}
				if dig(c, "lifecycle", "preStop") != nil {
					t.Errorf("%s: has a preStop hook; SIGTERM starts the drain", w.name)
				}
				sc := dig(c, "securityContext")
				for k, want := range map[string]any{"runAsNonRoot": true, "runAsUser": 65532, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false} {
					if got := dig(sc, k); got != want {
						t.Errorf("%s: securityContext.%s = %v, want %v", w.name, k, got, want)
					}
				}
				if d := dig(sc, "capabilities", "drop"); !reflect.DeepEqual(d, []any{"ALL"}) {
					t.Errorf("%s: capabilities.drop = %v", w.name, d)
				}
				if s := str(dig(sc, "seccompProfile", "type")); s != "RuntimeDefault" {
					t.Errorf("%s: seccompProfile %q", w.name, s)
				}
				if dig(c, "resources", "requests", "cpu") == nil || dig(c, "resources", "limits", "memory") == nil {
					t.Errorf("%s: resources %v", w.name, c["resources"])
				}
				mounts := map[string]map[string]any{}
				for _, m := range c["volumeMounts"].([]any) {
					mm := m.(map[string]any)
					mounts[str(mm["mountPath"])] = mm
				}
				for _, p := range []string{"/etc/livecluster", "/tmp", "/data"} {
					if mounts[p] == nil {
						t.Errorf("%s: nothing mounted at %s", w.name, p)
					}
				}
				if sp := mounts["/etc/livecluster"]["subPath"]; sp != nil {
					t.Errorf("%s: config mounted with subPath %v: no live reload", w.name, sp)
				}
				args := fmt.Sprint(c["args"])
				if !strings.Contains(args, "--config /etc/livecluster/config.yaml") {
					t.Errorf("%s: args %s", w.name, args)
				}
				if dig(o, "spec", "template", "metadata", "annotations", "checksum/config") == nil {
					t.Errorf("%s: no checksum/config annotation", w.name)
				}
				if a := dig(o, "spec", "template", "spec", "automountServiceAccountToken"); a != false {
					t.Errorf("%s: automountServiceAccountToken %v", w.name, a)
				}
			}
			// Two helm test pods, cleaned up when they pass.
			n := 0
			for _, o := range r {
				if dig(o, "metadata", "annotations", "helm.sh/hook") == "test" {
					n++
				}
			}
			if n != 2 {
				t.Errorf("%d helm test pods, want 2", n)
			}
		})
	}
}

// TestLint runs helm lint --strict with each values file.
func TestLint(t *testing.T) {
	for _, f := range valuesFiles(t) {
		args := []string{"lint", "--strict", chartDir, "--kube-version", kubeVersion}
		if f != "" {
			args = append(args, "-f", f)
		}
		out, err := exec.Command(helmBin(t), args...).CombinedOutput()
		if err != nil {
			t.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestSchemaRefuses: unknown keys (at any depth, including the binaries'
// config maps) and wrong types fail the render, naming the key.
func TestSchemaRefuses(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "bogus=1"}, "'bogus' not allowed"},
		{[]string{"--set", "ocm.replicas=3"}, "'replicas' not allowed"},
		{[]string{"--set", "origin.hls.sotrage=perPod"}, "'sotrage' not allowed"},
		{[]string{"--set", "ocm.podDisruptionBudget.maxUnavailable=1"}, "set exactly one of minAvailable and maxUnavailable"},
		{[]string{"--set", "origin.config.hls.windw=8"}, "'windw' not allowed"},
		{[]string{"--set", "edge.config.edge.upstream.protocl=flv"}, "'protocl' not allowed"},
		{[]string{"--set", "ocm.config.etcd.endpoints={http://x:2379}"}, "'endpoints' not allowed"},
		{[]string{"--set", "edge.replicaCount=two"}, "/edge/replicaCount"},
		{[]string{"--set", "origin.config.hls.window=eight"}, "/origin/config/hls/window"},
		{[]string{"--set", "origin.config.shutdown.drainTimeout=30"}, "/origin/config/shutdown/drainTimeout"},
		{[]string{"--set-string", "origin.config.shutdown.drainTimeout=30"}, "/origin/config/shutdown/drainTimeout"},
		{[]string{"--set", "origin.config.shutdown.sigterm=fast"}, "/origin/config/shutdown/sigterm"},
		{[]string{"--set", "origin.hls.storage=nfs"}, "/origin/hls/storage"},
		{[]string{"--set", "ocm.podAntiAffinity=always"}, "/ocm/podAntiAffinity"},
		{[]string{"--set", "edge.service.type=Ingress"}, "/edge/service/type"},
		{[]string{"--set", "origin.config.log.level=loud"}, "/origin/config/log/level"},
	} {
		_, err := render(t, c.args...)
		if err == nil {
			t.Errorf("%v: rendered, want a schema error", c.args)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error does not name %q:\n%v", c.args, c.want, err)
		}
	}
	// Free-form maps stay free.
	mustRender(t, "--set", "origin.podAnnotations.example\\.com/team=media",
		"--set", "edge.nodeSelector.pool=edge", "--set", "ocm.extraEnv[0].name=GODEBUG", "--set", "ocm.extraEnv[0].value=x=1")
}

// TestTerminationGracePeriod: ceil(startWait + drainTimeout + finalWait + 5 s
// + margin), read from each component's config as Go durations.
func TestTerminationGracePeriod(t *testing.T) {
	r := mustRender(t)
	for _, w := range workloads {
		// 2.3 + 30 + 3.2 + 5 + 5 = 45.5
		if g := grace(r, t, w.kind, w.name); g != 46 {
			t.Errorf("%s: grace %d, want 46", w.name, g)
		}
	}
	r = mustRender(t, "--set", "origin.config.shutdown.startWait=500ms", "--set", "origin.config.shutdown.drainTimeout=1m30s",
		"--set", "origin.config.shutdown.finalWait=0s", "--set", "terminationGraceMarginSeconds=2",
		"--set", "edge.config.shutdown.drainTimeout=2m", "--set", "ocm.terminationGracePeriodSeconds=15")
	for name, want := range map[string]int{
		"lc-livecluster-origin": 98,  // 0.5 + 90 + 0 + 5 + 2 = 97.5
		"lc-livecluster-edge":   133, // 2.3 + 120 + 3.2 + 5 + 2 = 132.5
		"lc-livecluster-ocm":    15,  // pinned
	} {
		kind := "Deployment"
		if strings.HasSuffix(name, "origin") {
			kind = "StatefulSet"
		}
		if g := grace(r, t, kind, name); g != want {
			t.Errorf("%s: grace %d, want %d", name, g, want)
		}
	}
	if g := grace(mustRender(t), t, "StatefulSet", "lc-livecluster-etcd"); g != 30 {
		t.Errorf("etcd grace %d, want 30", g)
	}
}

// TestChecksumOnlyRestartOnlyKeys: a live key's edit keeps every pod
// template as it was (no rollout; the binaries reload the ConfigMap), a
// restart-only key's edit rolls that component only.
func TestChecksumOnlyRestartOnlyKeys(t *testing.T) {
	base := mustRender(t)
	sums := func(r rendered) map[string]string {
		m := map[string]string{}
		for _, w := range workloads {
			m[w.component] = checksum(r, t, w.kind, w.name)
		}
		return m
	}
	b := sums(base)
	for _, live := range [][]string{
		{"ocm.config.log.level=debug", "origin.config.log.level=warn", "edge.config.log.level=error"},
		{"origin.config.hls.enabled=false"},
		{"origin.config.ocm.claimTimeout=9s"},
		{"edge.config.edge.idleTimeout=30s", "edge.config.edge.waitTimeout=9s"},
		{"edge.config.edge.upstream.protocol=flv", "edge.config.edge.forward.retryTimeout=1m"},
		{"origin.config.shutdown.startWait=3s", "ocm.terminationGracePeriodSeconds=46", "origin.terminationGracePeriodSeconds=46"},
	} {
		var args []string
		for _, s := range live {
			args = append(args, "--set", s)
		}
		r := mustRender(t, args...)
		if got := sums(r); !reflect.DeepEqual(got, b) {
			t.Errorf("live edit %v changed checksums: %v -> %v", live, b, got)
		}
		for _, w := range workloads {
			before := dig(base.get(t, w.kind, w.name), "spec", "template")
			after := dig(r.get(t, w.kind, w.name), "spec", "template")
			if !reflect.DeepEqual(before, after) {
				t.Errorf("live edit %v changed the pod template of %s (a rollout)", live, w.name)
			}
		}
	}
	// The live edit did reach the ConfigMap.
	if c := configOf(t, mustRender(t, "--set", "origin.config.log.level=debug"), "origin"); dig(c, "log", "level") != "debug" {
		t.Errorf("origin config.yaml log.level = %v", dig(c, "log", "level"))
	}

	for _, c := range []struct {
		set   string
		rolls string
	}{
		{"origin.config.rtmp.listen=:1936", "origin"},
		{"origin.config.hls.window=8", "origin"},
		{"edge.config.edge.hls.cacheBytes=1000000", "edge"},
		{"ocm.config.leaseTTL=20s", "ocm"},
		{"ocm.config.pprof=true", "ocm"},
	} {
		got := sums(mustRender(t, "--set", c.set))
		for comp, sum := range got {
			if changed := sum != b[comp]; changed != (comp == c.rolls) {
				t.Errorf("%s: %s checksum changed=%v, want %v", c.set, comp, changed, comp == c.rolls)
			}
		}
	}
	// The listen port and the container port agree.
	r := mustRender(t, "--set", "origin.config.rtmp.listen=:1936")
	ports := fmt.Sprint(container(r.get(t, "StatefulSet", "lc-livecluster-origin"))["ports"])
	if !strings.Contains(ports, "containerPort:1936") {
		t.Errorf("origin ports %s, want containerPort 1936", ports)
	}
}

// TestLiveKeysMatchBinaries: the chart's list of live keys (shown on each
// ConfigMap) is the binaries' own, read from their Go source.
func TestLiveKeysMatchBinaries(t *testing.T) {
	common := goStrings(t, "node/config/common.go", "CommonLive")
	// Origins and edges append config.LimitsLive to their own list.
	limits := goStrings(t, "node/config/limits.go", "LimitsLive")
	want := map[string][]string{
		"ocm":    common,
		"origin": slices.Concat(common, goStrings(t, "origin/internal/config/config.go", "Live"), limits),
		"edge":   slices.Concat(common, goStrings(t, "edge/internal/app/config.go", "Live"), limits),
	}
	// The OCM's own Live list is its loader's Live field (main.go).
	if got := goStrings(t, "ocm/cmd/ocm/main.go", "Live"); len(got) != 0 {
		want["ocm"] = append(want["ocm"], got...)
	}
	r := mustRender(t)
	for comp, keys := range want {
		cm := r.get(t, "ConfigMap", "lc-livecluster-"+comp)
		got := strings.Split(str(dig(cm, "metadata", "annotations", "livecluster.io/live-keys")), ",")
		slices.Sort(got)
		slices.Sort(keys)
		if !slices.Equal(got, keys) {
			t.Errorf("%s: chart live keys %v, binary %v (templates/_helpers.tpl livecluster.liveKeys)", comp, got, keys)
		}
	}
}

// goStrings returns the string literals of the []string named name in file
// (relative to the repository): a var/const spec or a "Live:" field, a
// literal or the literal that append(...) extends.
func goStrings(t *testing.T, file, name string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, file), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var lit *ast.CompositeLit
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.ValueSpec:
			for i, id := range n.Names {
				if id.Name == name && i < len(n.Values) {
					lit = literal(n.Values[i])
				}
			}
		case *ast.KeyValueExpr:
			if k, ok := n.Key.(*ast.Ident); ok && k.Name == name {
				lit = literal(n.Value)
			}
		}
		return lit == nil
	})
	if lit == nil {
		return nil
	}
	var out []string
	for _, e := range lit.Elts {
		switch e := e.(type) {
		case *ast.BasicLit:
			if e.Kind == token.STRING {
				s, _ := strconv.Unquote(e.Value)
				out = append(out, s)
			}
		case *ast.SelectorExpr: // config.AuthLive: a string constant of node/config
			if x, ok := e.X.(*ast.Ident); ok && x.Name == "config" {
				out = append(out, configConst(t, e.Sel.Name))
			}
		}
	}
	return out
}

// configConst returns the value of the string constant name declared in
// node/config; the test fails when there is none, so a list naming a
// constant is never read as shorter than it is.
func configConst(t *testing.T, name string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "node/config", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, sp := range g.Specs {
				vs := sp.(*ast.ValueSpec)
				for i, id := range vs.Names {
					if id.Name != name || i >= len(vs.Values) {
						continue
					}
					if b, ok := vs.Values[i].(*ast.BasicLit); ok && b.Kind == token.STRING {
						v, _ := strconv.Unquote(b.Value)
						return v
					}
				}
			}
		}
	}
	t.Fatalf("no string constant %s in node/config", name)
	return ""
}

// literal returns e as a composite literal, or the first argument of an
// append call.
func literal(e ast.Expr) *ast.CompositeLit {
	if c, ok := e.(*ast.CallExpr); ok {
		if f, ok := c.Fun.(*ast.Ident); ok && f.Name == "append" && len(c.Args) > 0 {
			e = c.Args[0]
		}
	}
	lit, _ := e.(*ast.CompositeLit)
	return lit
}

// TestEtcd: bundled members find each other by their pod DNS names; with
// external etcd the StatefulSet is gone and the OCM gets the endpoints and
// TLS files; the OCM's embedded etcd is never the chart's path.
func TestEtcd(t *testing.T) {
	r := mustRender(t)
	sts := r.get(t, "StatefulSet", "lc-livecluster-etcd")
	if n := dig(sts, "spec", "replicas"); n != 3 {
		t.Errorf("etcd replicas %v", n)
	}
	if dig(sts, "spec", "volumeClaimTemplates", "0", "metadata", "name") != "data" {
		t.Error("etcd: no data volumeClaimTemplate with persistence on")
	}
	hl := r.get(t, "Service", "lc-livecluster-etcd-headless")
	if dig(hl, "spec", "clusterIP") != "None" || dig(hl, "spec", "publishNotReadyAddresses") != true {
		t.Errorf("etcd headless service spec %v", hl["spec"])
	}
	args := fmt.Sprint(container(sts)["args"])
	dom := "lc-livecluster-etcd-headless.media.svc.cluster.local"
	for _, want := range []string{
		"--initial-cluster=lc-livecluster-etcd-0=http://lc-livecluster-etcd-0." + dom + ":2380,lc-livecluster-etcd-1=http://lc-livecluster-etcd-1." + dom + ":2380,lc-livecluster-etcd-2=http://lc-livecluster-etcd-2." + dom + ":2380 ",
		"--advertise-client-urls=http://$(POD_NAME)." + dom + ":2379",
		"--initial-advertise-peer-urls=http://$(POD_NAME)." + dom + ":2380",
		"--name=$(POD_NAME)",
	} {
		if !strings.Contains(args+" ", want) {
			t.Errorf("etcd args lack %q:\n%s", want, args)
		}
	}
	eps := dig(configOf(t, r, "ocm"), "etcd", "endpoints")
	if n := len(eps.([]any)); n != 3 || !strings.HasPrefix(str(dig(eps, "0")), "http://lc-livecluster-etcd-0."+dom+":2379") {
		t.Errorf("ocm etcd.endpoints %v", eps)
	}
	r = mustRender(t, "--set", "etcd.persistence.enabled=false", "--set", "etcd.replicaCount=1")
	sts = r.get(t, "StatefulSet", "lc-livecluster-etcd")
	if dig(sts, "spec", "volumeClaimTemplates") != nil || !strings.Contains(fmt.Sprint(dig(sts, "spec", "template", "spec", "volumes")), "name:data") {
		t.Errorf("etcd without persistence: %v", dig(sts, "spec", "template", "spec", "volumes"))
	}

	if _, err := render(t, "--set", "etcd.enabled=false"); err == nil || !strings.Contains(err.Error(), "etcd.external.endpoints: required") {
		t.Errorf("external etcd without endpoints: %v", err)
	}
	r = mustRender(t, "--set", "etcd.enabled=false", "--set", "etcd.external.endpoints={https://e1:2379,https://e2:2379}",
		"--set", "etcd.external.tls.enabled=true", "--set", "etcd.external.tls.secretName=etcd-client")
	for _, o := range r {
		if strings.Contains(o.name(), "etcd") && o.kind() != "ConfigMap" {
			t.Errorf("external etcd renders %s %s", o.kind(), o.name())
		}
	}
	c := configOf(t, r, "ocm")
	if !reflect.DeepEqual(dig(c, "etcd", "endpoints"), []any{"https://e1:2379", "https://e2:2379"}) {
		t.Errorf("ocm etcd.endpoints %v", dig(c, "etcd", "endpoints"))
	}
	for k, v := range map[string]string{"caFile": "/etc/livecluster-etcd-tls/ca.crt", "certFile": "/etc/livecluster-etcd-tls/tls.crt", "keyFile": "/etc/livecluster-etcd-tls/tls.key"} {
		if got := dig(c, "etcd", k); got != v {
			t.Errorf("ocm etcd.%s = %v, want %s", k, got, v)
		}
	}
	ocm := r.get(t, "Deployment", "lc-livecluster-ocm")
	if vols := fmt.Sprint(dig(ocm, "spec", "template", "spec", "volumes")); !strings.Contains(vols, "secretName:etcd-client") {
		t.Errorf("ocm volumes lack the TLS secret: %s", vols)
	}
	if _, err := render(t, "--set", "etcd.enabled=false", "--set", "etcd.external.endpoints={https://e1:2379}", "--set", "etcd.external.tls.enabled=true"); err == nil {
		t.Error("TLS without a secret name rendered")
	}
}

// TestOCM: two replicas kept apart by a preferred anti-affinity, a PDB, a
// ClusterIP Service with gRPC and admin.
func TestOCM(t *testing.T) {
	r := mustRender(t)
	d := r.get(t, "Deployment", "lc-livecluster-ocm")
	if n := dig(d, "spec", "replicas"); n != 2 {
		t.Errorf("ocm replicas %v, want 2", n)
	}
	term := dig(d, "spec", "template", "spec", "affinity", "podAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution", "0", "podAffinityTerm")
	if dig(term, "topologyKey") != "kubernetes.io/hostname" || dig(term, "labelSelector", "matchLabels", "app.kubernetes.io/component") != "ocm" {
		t.Errorf("ocm anti-affinity %v", term)
	}
	if p := dig(r.get(t, "PodDisruptionBudget", "lc-livecluster-ocm"), "spec", "minAvailable"); p != 1 {
		t.Errorf("ocm PDB minAvailable %v", p)
	}
	svc := r.get(t, "Service", "lc-livecluster-ocm")
	if dig(svc, "spec", "type") != "ClusterIP" || dig(svc, "spec", "ports", "0", "port") != 7000 || dig(svc, "spec", "ports", "1", "port") != 1985 {
		t.Errorf("ocm service %v", svc["spec"])
	}
	for _, l := range []string{"name", "instance", "version", "component", "part-of", "managed-by"} {
		if dig(d, "metadata", "labels", "app.kubernetes.io/"+l) == nil {
			t.Errorf("ocm lacks label app.kubernetes.io/%s", l)
		}
	}
	hard := mustRender(t, "--set", "ocm.podAntiAffinity=hard").get(t, "Deployment", "lc-livecluster-ocm")
	if dig(hard, "spec", "template", "spec", "affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution") == nil {
		t.Error("ocm.podAntiAffinity=hard: no required anti-affinity")
	}
}

func env(c map[string]any) map[string]string {
	m := map[string]string{}
	for _, e := range c["env"].([]any) {
		em := e.(map[string]any)
		m[str(em["name"])] = str(em["value"])
	}
	return m
}

// TestOrigin: advertised name, HLS volume modes, headless Service.
func TestOrigin(t *testing.T) {
	r := mustRender(t)
	sts := r.get(t, "StatefulSet", "lc-livecluster-origin")
	if dig(sts, "spec", "podManagementPolicy") != "Parallel" || dig(sts, "spec", "updateStrategy", "type") != "RollingUpdate" {
		t.Errorf("origin policies %v %v", dig(sts, "spec", "podManagementPolicy"), dig(sts, "spec", "updateStrategy"))
	}
	if a := env(container(sts))["LIVECLUSTER_ADVERTISE_HOST"]; a != "$(POD_NAME).lc-livecluster-origin-headless.media.svc.cluster.local" {
		t.Errorf("advertise %q", a)
	}
	hl := r.get(t, "Service", "lc-livecluster-origin-headless")
	if dig(hl, "spec", "clusterIP") != "None" || dig(hl, "spec", "publishNotReadyAddresses") != true || dig(sts, "spec", "serviceName") != hl.name() {
		t.Errorf("origin headless service %v", hl["spec"])
	}
	if c := configOf(t, r, "origin"); dig(c, "hls", "dir") != "/data/hls" || dig(c, "http", "writeDefaults") != true || dig(c, "ocm", "address") != "lc-livecluster-ocm:7000" {
		t.Errorf("origin config %v", c)
	}
	if v := fmt.Sprint(dig(sts, "spec", "template", "spec", "volumes")); !strings.Contains(v, "name:hls") || !strings.Contains(v, "emptyDir") {
		t.Errorf("origin volumes %s", v)
	}

	sts = mustRender(t, "--set", "origin.advertise=podIP", "--set", "origin.hls.storage=perPod", "--set", "origin.hls.size=3Gi").get(t, "StatefulSet", "lc-livecluster-origin")
	if a := env(container(sts))["LIVECLUSTER_ADVERTISE_HOST"]; a != "$(POD_IP)" {
		t.Errorf("advertise podIP: %q", a)
	}
	if dig(sts, "spec", "volumeClaimTemplates", "0", "metadata", "name") != "hls" || dig(sts, "spec", "volumeClaimTemplates", "0", "spec", "resources", "requests", "storage") != "3Gi" {
		t.Errorf("perPod: claims %v", dig(sts, "spec", "volumeClaimTemplates"))
	}

	sts = mustRender(t, "--set", "origin.hls.storage=shared", "--set", "origin.hls.existingClaim=nas").get(t, "StatefulSet", "lc-livecluster-origin")
	if d := env(container(sts))["LIVECLUSTER_HLS_DIR"]; d != "/data/hls/$(POD_NAME)" {
		t.Errorf("shared: LIVECLUSTER_HLS_DIR %q", d)
	}
	if v := fmt.Sprint(dig(sts, "spec", "template", "spec", "volumes")); !strings.Contains(v, "claimName:nas") {
		t.Errorf("shared: volumes %s", v)
	}
	if _, err := render(t, "--set", "origin.hls.storage=shared"); err == nil || !strings.Contains(err.Error(), "origin.hls.existingClaim") {
		t.Errorf("shared without a claim: %v", err)
	}
}

// TestEdge: Service from values, HPA on CPU and players, rolling update
// that never loses capacity.
func TestEdge(t *testing.T) {
	r := mustRender(t)
	d := r.get(t, "Deployment", "lc-livecluster-edge")
	if dig(d, "spec", "strategy", "rollingUpdate", "maxUnavailable") != 0 {
		t.Errorf("edge strategy %v", dig(d, "spec", "strategy"))
	}
	svc := r.get(t, "Service", "lc-livecluster-edge")
	if dig(svc, "spec", "type") != "LoadBalancer" || dig(svc, "spec", "externalTrafficPolicy") != "Cluster" {
		t.Errorf("edge service %v", svc["spec"])
	}
	if r.find("HorizontalPodAutoscaler", "lc-livecluster-edge") != nil {
		t.Error("HPA rendered while off")
	}
	if r.find("PodDisruptionBudget", "lc-livecluster-edge") == nil {
		t.Error("no edge PDB")
	}
	r = mustRender(t, "--set", "edge.autoscaling.enabled=true", "--set", "edge.autoscaling.players.enabled=true",
		"--set", "edge.service.type=ClusterIP", "--set", "edge.service.annotations.a=b")
	hpa := r.get(t, "HorizontalPodAutoscaler", "lc-livecluster-edge")
	if dig(hpa, "spec", "metrics", "0", "resource", "name") != "cpu" || dig(hpa, "spec", "metrics", "1", "pods", "metric", "name") != "livecluster_edge_players" {
		t.Errorf("HPA metrics %v", dig(hpa, "spec", "metrics"))
	}
	if dig(r.get(t, "Deployment", "lc-livecluster-edge"), "spec", "replicas") != nil {
		t.Error("edge replicas set while the HPA owns them")
	}
	svc = r.get(t, "Service", "lc-livecluster-edge")
	if dig(svc, "spec", "type") != "ClusterIP" || dig(svc, "spec", "externalTrafficPolicy") != nil || dig(svc, "metadata", "annotations", "a") != "b" {
		t.Errorf("edge ClusterIP service %v %v", svc["spec"], dig(svc, "metadata", "annotations"))
	}
}

// TestOptional: NetworkPolicy, ServiceMonitor and dashboard are off by
// default and well-formed when on.
func TestOptional(t *testing.T) {
	r := mustRender(t)
	for _, k := range []string{"NetworkPolicy", "ServiceMonitor"} {
		for _, o := range r {
			if o.kind() == k {
				t.Errorf("%s %s rendered by default", k, o.name())
			}
		}
	}
	if r.find("ConfigMap", "lc-livecluster-dashboard") != nil {
		t.Error("dashboard rendered by default")
	}
	r = mustRender(t, "--set", "networkPolicy.enabled=true", "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.dashboard.enabled=true")
	np := r.get(t, "NetworkPolicy", "lc-livecluster-ocm")
	from := fmt.Sprint(dig(np, "spec", "ingress", "0", "from"))
	for _, want := range []string{"values:[lc]", "values:[origin edge test]"} {
		if !strings.Contains(from, want) {
			t.Errorf("ocm NetworkPolicy from %s lacks %s", from, want)
		}
	}
	n := 0
	for _, o := range r {
		if o.kind() == "ServiceMonitor" {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d ServiceMonitors, want 4", n)
	}
	dash := str(dig(r.get(t, "ConfigMap", "lc-livecluster-dashboard"), "data", "livecluster.json"))
	for _, m := range []string{"livecluster_edge_players", "livecluster_origin_streams", "ocm_grpc_request_duration_seconds_bucket"} {
		if !strings.Contains(dash, m) {
			t.Errorf("dashboard lacks %s", m)
		}
	}
}
