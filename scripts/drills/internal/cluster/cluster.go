// Package cluster runs livecluster's container images (built by
// scripts/images.sh) on a private Docker network for failure drills: it
// starts containers, waits until they are ready, SIGKILLs or freezes them,
// cuts them off a network and back, collects their logs, and removes
// everything it created.
//
// It drives the docker CLI (no SDK: the drills need nothing the CLI lacks,
// and the CLI is what an operator would type). Containers are reached from
// the host at their IP on the cluster's network, so no host port is
// published and two runs never collide on a port.
//
//	c, err := cluster.New(ctx, cluster.Options{Prefix: "lc-dmedia", Tag: "wip-dmedia"})
//	if err != nil { ... }
//	defer c.Close()                  // always: removes containers and networks
//	ks, err := c.RunAll(ctx, c.OCMSpec("ocm", nil), // started at once, ready when it returns
//		c.OriginSpec("origin1", "ocm", nil), c.EdgeSpec("edge1", "ocm", nil))
//	ocm, o1 := ks[0], ks[1]
//	_ = o1.Kill(ctx)                 // docker kill -s KILL: SIGKILL to PID 1
//
// Every container and network carries the label lc.drill.run=<run id>
// (Options.RunLabel, default the network name), so a runner that was itself
// SIGKILLed can be cleaned up with RemoveLabelled. A drill that fails calls
// Fail before Close: Close then writes every container's log to LogDir and
// the last lines to Options.Log.
package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Ports inside the containers (the images' defaults).
const (
	PortRTMP  = 1935 // origin, edge
	PortHTTP  = 8080 // origin, edge: HTTP-FLV, HLS, origin API
	PortAdmin = 1985 // every binary: /healthz, /readyz, /metrics, API
	PortGRPC  = 7000 // ocm
	PortEtcd  = 2379 // etcd client
)

// Label is the Docker label every object of a run carries; its value is the
// run label.
const Label = "lc.drill.run"

// Options configure a Cluster.
type Options struct {
	// Prefix starts every container and network name (required, e.g.
	// "lc-dmedia"): one helper's or runner's namespace on a shared daemon.
	Prefix string
	// Tag is the image tag: containers run livecluster/<image>:<Tag>
	// (required; never "latest", which other builds move).
	Tag string
	// RunLabel is the value of the lc.drill.run label (default: the
	// network name, unique per Cluster).
	RunLabel string
	// LogDir receives <container>.log files when the cluster failed
	// (default: no files, only the tails on Log).
	LogDir string
	// Log receives progress lines and, on failure, log tails (default
	// os.Stderr).
	Log io.Writer
	// Docker is the docker binary (default "docker").
	Docker string
}

// Cluster is one run's containers and networks. Its methods are safe for
// concurrent use.
type Cluster struct {
	o   Options
	id  string // random, unique per Cluster
	net string // the default network

	mu         sync.Mutex
	containers []*Container
	networks   []string
	failed     bool
	closed     bool
}

// New creates the cluster's private network, <Prefix>-<random>. It fails
// when Docker is not usable or the options are incomplete.
func New(ctx context.Context, o Options) (*Cluster, error) {
	if o.Prefix == "" || o.Tag == "" {
		return nil, errors.New("cluster: Options.Prefix and Options.Tag are required")
	}
	if o.Tag == "latest" {
		return nil, errors.New("cluster: refusing tag latest: other builds on this daemon move it; pass the tag scripts/images.sh printed")
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	if o.Docker == "" {
		o.Docker = "docker"
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("cluster: random run id: %w", err)
	}
	c := &Cluster{o: o, id: hex.EncodeToString(b[:])}
	c.net = o.Prefix + "-" + c.id
	if c.o.RunLabel == "" {
		c.o.RunLabel = c.net
	}
	if err := c.addNetwork(ctx, c.net); err != nil {
		return nil, err
	}
	return c, nil
}

// Network is the name of the cluster's default network, which every
// container joins.
func (c *Cluster) Network() string { return c.net }

// AddNetwork creates another network of the cluster, <default>-<suffix>,
// and returns its name: join it with Spec.Networks or Container.Connect
// (e.g. a control-plane network to cut an origin off the OCM while its
// publisher still reaches it).
func (c *Cluster) AddNetwork(ctx context.Context, suffix string) (string, error) {
	name := c.net + "-" + suffix
	return name, c.addNetwork(ctx, name)
}

func (c *Cluster) addNetwork(ctx context.Context, name string) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.New("cluster: closed")
	}
	c.mu.Unlock()
	if _, err := c.docker(ctx, "network", "create", "--label", Label+"="+c.o.RunLabel, name); err != nil {
		return fmt.Errorf("cluster: create network %s: %w", name, err)
	}
	c.mu.Lock()
	c.networks = append(c.networks, name)
	c.mu.Unlock()
	return nil
}

// Spec describes one container.
type Spec struct {
	// Name is the short name (required): the container is <network>-<Name>
	// and the other containers resolve it by that full name.
	Name string
	// Image is ocm, origin, edge or etcd: livecluster/<Image>:<Tag>.
	Image string
	// Args are the command (default: the image's, "serve"); Env are
	// LIVECLUSTER_* variables (or any other).
	Args []string
	Env  map[string]string
	// Networks the container joins besides the default one.
	Networks []string
	// Aliases are further DNS names of the container on Networks only, not
	// on the default network: advertise one (LIVECLUSTER_ADVERTISE_HOST)
	// to make peers reach the container over those networks.
	Aliases []string
	// Binds are host directories mounted read-write into the container,
	// "host:container" (docker run -v), for files a drill reads back while
	// or after the container runs (e.g. LIVECLUSTER_OCM_HISTORY logs; the
	// root is read-only and /data is a tmpfs that docker cp cannot read).
	// The container runs as 65532: the host directory must be writable by
	// it (Cluster.BindDir makes one). Run refuses a bind without both parts.
	Binds []string
}

// Container is one running container of the cluster.
type Container struct {
	c     *Cluster
	Name  string // full Docker name, also its host name on the networks
	Short string // Spec.Name
	Image string
}

// Run starts a container from spec, hardened as in production (read-only
// root, tmpfs /data and /tmp, user 65532, no capabilities). It returns once
// Docker started it; use WaitReady for readiness. On failure nothing of it
// is left running.
func (c *Cluster) Run(ctx context.Context, s Spec) (*Container, error) {
	if s.Name == "" || s.Image == "" {
		return nil, errors.New("cluster: Spec.Name and Spec.Image are required")
	}
	for _, b := range s.Binds {
		if h, ct, ok := strings.Cut(b, ":"); !ok || !filepath.IsAbs(h) || !strings.HasPrefix(ct, "/") {
			return nil, fmt.Errorf("cluster: bind %q of %s: want /host/dir:/container/dir", b, s.Name)
		}
	}
	k := &Container{c: c, Name: c.net + "-" + s.Name, Short: s.Name, Image: s.Image}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("cluster: closed")
	}
	// Registered before docker run, so Close removes it even if run
	// fails half-way or ctx ends during it.
	c.containers = append(c.containers, k)
	c.mu.Unlock()
	args := []string{"run", "-d", "--name", k.Name, "--hostname", k.Name, "--network", c.net,
		"--label", Label + "=" + c.o.RunLabel,
		"--read-only", "--tmpfs", "/data:uid=65532,gid=65532,mode=0700", "--tmpfs", "/tmp:mode=1777",
		"--user", "65532:65532", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"}
	for _, kv := range sortedEnv(s.Env) {
		args = append(args, "-e", kv)
	}
	for _, b := range s.Binds {
		args = append(args, "-v", b)
	}
	args = append(args, "livecluster/"+s.Image+":"+c.o.Tag)
	args = append(args, s.Args...)
	if _, err := c.docker(ctx, args...); err != nil {
		return nil, fmt.Errorf("cluster: start %s: %w", k.Name, err)
	}
	for _, n := range s.Networks {
		if err := k.Connect(ctx, n, s.Aliases...); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// BindDir creates (if needed) the host directory dir, writable by the
// containers' user 65532 (mode 0777: the drills' scratch directory is the
// host user's), for a Spec.Binds entry "dir:/path".
func BindDir(dir string) error {
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return fmt.Errorf("cluster: bind directory: %w", err)
	}
	// MkdirAll applies the umask; the containers' user needs write access.
	if err := os.Chmod(dir, 0o777); err != nil {
		return fmt.Errorf("cluster: bind directory: %w", err)
	}
	return nil
}

// OCM starts an OCM with its embedded etcd (OCMSpec).
func (c *Cluster) OCM(ctx context.Context, name string, env map[string]string) (*Container, error) {
	return c.Run(ctx, c.OCMSpec(name, env))
}

// Origin starts an origin registered with ocm (OriginSpec).
func (c *Cluster) Origin(ctx context.Context, name string, ocm *Container, env map[string]string) (*Container, error) {
	return c.Run(ctx, c.OriginSpec(name, ocm.Short, env))
}

// Edge starts an edge registered with ocm (EdgeSpec).
func (c *Cluster) Edge(ctx context.Context, name string, ocm *Container, env map[string]string) (*Container, error) {
	return c.Run(ctx, c.EdgeSpec(name, ocm.Short, env))
}

// OCMSpec is an OCM with its embedded etcd; env adds or overrides
// variables (e.g. LIVECLUSTER_SESSION_GRACE).
func (c *Cluster) OCMSpec(name string, env map[string]string) Spec {
	return Spec{Name: name, Image: "ocm", Env: merge(map[string]string{"LIVECLUSTER_NODE_ID": name}, env)}
}

// OriginSpec is an origin registered with the OCM whose Spec.Name is ocm
// (it may start at the same time: nodes retry until the OCM answers),
// advertising its container name; env adds or overrides variables.
func (c *Cluster) OriginSpec(name, ocm string, env map[string]string) Spec {
	return Spec{Name: name, Image: "origin", Env: merge(c.nodeEnv(name, ocm), env)}
}

// EdgeSpec is an edge registered with the OCM whose Spec.Name is ocm, as
// OriginSpec.
func (c *Cluster) EdgeSpec(name, ocm string, env map[string]string) Spec {
	return Spec{Name: name, Image: "edge", Env: merge(c.nodeEnv(name, ocm), env)}
}

// RunAll starts the containers of specs at once (docker run is slow on a
// busy machine) and waits until every one is ready. It returns them in the
// order of specs, or the first error.
func (c *Cluster) RunAll(ctx context.Context, specs ...Spec) ([]*Container, error) {
	ks := make([]*Container, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Go(func() {
			k, err := c.Run(ctx, s)
			if err == nil {
				err = k.WaitReady(ctx)
			}
			ks[i], errs[i] = k, err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ks, nil
}

func (c *Cluster) nodeEnv(name, ocm string) map[string]string {
	return map[string]string{
		"LIVECLUSTER_NODE_ID":        name,
		"LIVECLUSTER_OCM_ADDRESS":    net.JoinHostPort(c.net+"-"+ocm, strconv.Itoa(PortGRPC)),
		"LIVECLUSTER_ADVERTISE_HOST": c.net + "-" + name,
	}
}

// Containers returns the containers started so far, in start order.
func (c *Cluster) Containers() []*Container {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Container(nil), c.containers...)
}

// WaitReady waits until every container answers 200 on its readiness
// endpoint (/readyz on the admin port; etcd: /health on 2379), polling
// every 100 ms. It fails at once when a container stopped running, and when
// ctx ends.
func (c *Cluster) WaitReady(ctx context.Context, ks ...*Container) error {
	for _, k := range ks {
		if err := k.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Fail marks the run as failed: Close collects the logs.
func (c *Cluster) Fail() {
	c.mu.Lock()
	c.failed = true
	c.mu.Unlock()
}

// Close removes every container (docker rm -f, which also ends a paused
// one) and network the cluster created, after writing their logs when the
// run failed. It runs on its own 60 s budget, so it works after the
// drill's context was cancelled (Ctrl-C, timeout); call it in a defer. It
// returns the first removal error; calling it again does nothing.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	ks, nets, failed := c.containers, c.networks, c.failed
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if failed {
		for _, k := range ks {
			c.saveLogs(ctx, k)
		}
	}
	var first error
	if len(ks) > 0 {
		args := []string{"rm", "-f", "-v"}
		for _, k := range ks {
			args = append(args, k.Name)
		}
		if out, err := c.docker(ctx, args...); err != nil && !strings.Contains(out+err.Error(), "No such container") {
			first = fmt.Errorf("cluster: remove containers: %w", err)
		}
	}
	for i := len(nets) - 1; i >= 0; i-- {
		if _, err := c.docker(ctx, "network", "rm", nets[i]); err != nil && first == nil {
			first = fmt.Errorf("cluster: remove network %s: %w", nets[i], err)
		}
	}
	return first
}

// RemoveLabelled removes every container and network labelled
// lc.drill.run=runLabel: the cleanup of a runner whose drill process was
// killed before its Close ran. It removes only objects of that run.
func RemoveLabelled(ctx context.Context, docker, runLabel string) error {
	if docker == "" {
		docker = "docker"
	}
	f := "label=" + Label + "=" + runLabel
	out, err := exec.CommandContext(ctx, docker, "ps", "-aq", "--filter", f).Output()
	if err != nil {
		return fmt.Errorf("cluster: list containers of %s: %w", runLabel, err)
	}
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		if b, err := exec.CommandContext(ctx, docker, append([]string{"rm", "-f", "-v"}, ids...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("cluster: remove containers of %s: %w: %s", runLabel, err, b)
		}
	}
	out, err = exec.CommandContext(ctx, docker, "network", "ls", "-q", "--filter", f).Output()
	if err != nil {
		return fmt.Errorf("cluster: list networks of %s: %w", runLabel, err)
	}
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		if b, err := exec.CommandContext(ctx, docker, append([]string{"network", "rm"}, ids...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("cluster: remove networks of %s: %w: %s", runLabel, err, b)
		}
	}
	return nil
}

func (c *Cluster) saveLogs(ctx context.Context, k *Container) {
	b, err := k.Logs(ctx)
	if err != nil {
		fmt.Fprintf(c.o.Log, "cluster: logs of %s: %v\n", k.Name, err)
		return
	}
	if c.o.LogDir != "" {
		if err := os.MkdirAll(c.o.LogDir, 0o755); err == nil {
			p := filepath.Join(c.o.LogDir, k.Name+".log")
			if err := os.WriteFile(p, b, 0o644); err == nil {
				fmt.Fprintf(c.o.Log, "cluster: log of %s in %s\n", k.Name, p)
			}
		}
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	fmt.Fprintf(c.o.Log, "--- last lines of %s ---\n%s\n", k.Name, strings.Join(lines, "\n"))
}

// docker runs the docker CLI and returns its output; the error carries
// stderr.
func (c *Cluster) docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.o.Docker, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %w: %s", args[0], err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// IP returns the container's address on the cluster's default network. It
// changes when the container is reconnected, so ask again after Connect.
func (k *Container) IP(ctx context.Context) (string, error) {
	return k.IPOn(ctx, k.c.net)
}

// IPOn returns the container's address on network n; it fails when the
// container is not on n.
func (k *Container) IPOn(ctx context.Context, n string) (string, error) {
	out, err := k.c.docker(ctx, "inspect", "-f", `{{with index .NetworkSettings.Networks "`+n+`"}}{{.IPAddress}}{{end}}`, k.Name)
	if err != nil {
		return "", fmt.Errorf("cluster: address of %s: %w", k.Name, err)
	}
	if out == "" {
		return "", fmt.Errorf("cluster: %s has no address on %s", k.Name, n)
	}
	return out, nil
}

// Addr returns ip:port of the container on the default network.
func (k *Container) Addr(ctx context.Context, port int) (string, error) {
	ip, err := k.IP(ctx)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(ip, strconv.Itoa(port)), nil
}

// Running reports whether Docker says the container is running (a paused
// container is running).
func (k *Container) Running(ctx context.Context) (bool, error) {
	out, err := k.c.docker(ctx, "inspect", "-f", "{{.State.Running}}", k.Name)
	if err != nil {
		return false, fmt.Errorf("cluster: state of %s: %w", k.Name, err)
	}
	return out == "true", nil
}

// WaitReady polls the container's readiness endpoint every 100 ms until it
// answers 200; it fails when the container stopped, or with ctx.
func (k *Container) WaitReady(ctx context.Context) error {
	port, path := PortAdmin, "/readyz"
	if k.Image == "etcd" {
		port, path = PortEtcd, "/health"
	}
	client := &http.Client{Timeout: time.Second}
	var last string
	for i := 0; ; i++ {
		if i%10 == 0 { // every second: it may have died
			if ok, err := k.Running(ctx); err != nil {
				return err
			} else if !ok {
				k.c.Fail()
				return fmt.Errorf("cluster: %s stopped before it was ready (%s)", k.Name, last)
			}
		}
		if addr, err := k.Addr(ctx, port); err == nil {
			resp, err := client.Get("http://" + addr + path)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
				last = resp.Status
			} else {
				last = err.Error()
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: %s not ready (last: %s): %w", k.Name, last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill sends SIGKILL to the container's PID 1 (docker kill -s KILL): the
// process dies at once and the kernel closes its sockets.
func (k *Container) Kill(ctx context.Context) error { return k.Signal(ctx, "KILL") }

// Signal sends a signal (TERM, QUIT, HUP, KILL...) to PID 1.
func (k *Container) Signal(ctx context.Context, sig string) error {
	if _, err := k.c.docker(ctx, "kill", "-s", sig, k.Name); err != nil {
		return fmt.Errorf("cluster: signal %s to %s: %w", sig, k.Name, err)
	}
	return nil
}

// Pause freezes every process of the container (docker pause, the cgroup
// freezer): a lost host as its peers see it. Its sockets stay open and the
// kernel still acknowledges TCP, but nothing answers. Unpause thaws it.
func (k *Container) Pause(ctx context.Context) error {
	if _, err := k.c.docker(ctx, "pause", k.Name); err != nil {
		return fmt.Errorf("cluster: pause %s: %w", k.Name, err)
	}
	return nil
}

// Unpause thaws a paused container.
func (k *Container) Unpause(ctx context.Context) error {
	if _, err := k.c.docker(ctx, "unpause", k.Name); err != nil {
		return fmt.Errorf("cluster: unpause %s: %w", k.Name, err)
	}
	return nil
}

// Disconnect removes the container from network n (docker network
// disconnect --force): a partition. Packets to its old address are
// dropped, not refused; its established connections stall.
func (k *Container) Disconnect(ctx context.Context, n string) error {
	if _, err := k.c.docker(ctx, "network", "disconnect", "--force", n, k.Name); err != nil {
		return fmt.Errorf("cluster: disconnect %s from %s: %w", k.Name, n, err)
	}
	return nil
}

// Connect joins the container to network n (again), under its name and
// aliases as DNS names; its address on n may differ from before.
func (k *Container) Connect(ctx context.Context, n string, aliases ...string) error {
	args := []string{"network", "connect", "--alias", k.Name}
	for _, a := range aliases {
		args = append(args, "--alias", a)
	}
	if _, err := k.c.docker(ctx, append(args, n, k.Name)...); err != nil {
		return fmt.Errorf("cluster: connect %s to %s: %w", k.Name, n, err)
	}
	return nil
}

// Wait waits until the container exits and returns its exit code.
func (k *Container) Wait(ctx context.Context) (int, error) {
	out, err := k.c.docker(ctx, "wait", k.Name)
	if err != nil {
		return -1, fmt.Errorf("cluster: wait for %s: %w", k.Name, err)
	}
	code, err := strconv.Atoi(out)
	if err != nil {
		return -1, fmt.Errorf("cluster: wait for %s: exit code %q: %w", k.Name, out, err)
	}
	return code, nil
}

// FinishedAt returns when the container's PID 1 exited, as Docker
// recorded it (zero while it runs): the moment a Kill took effect.
func (k *Container) FinishedAt(ctx context.Context) (time.Time, error) {
	out, err := k.c.docker(ctx, "inspect", "-f", "{{.State.Running}} {{.State.FinishedAt}}", k.Name)
	if err != nil {
		return time.Time{}, fmt.Errorf("cluster: state of %s: %w", k.Name, err)
	}
	running, at, _ := strings.Cut(out, " ")
	if running == "true" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return time.Time{}, fmt.Errorf("cluster: %s finished at %q: %w", k.Name, at, err)
	}
	return t, nil
}

// Logs returns the container's stdout and stderr so far (the binaries log
// JSON lines to stderr).
func (k *Container) Logs(ctx context.Context) ([]byte, error) {
	cmd := exec.CommandContext(ctx, k.c.o.Docker, "logs", k.Name)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := cmd.Run(); err != nil {
		return b.Bytes(), fmt.Errorf("cluster: logs of %s: %w", k.Name, err)
	}
	return b.Bytes(), nil
}

// Metrics fetches the container's Prometheus metrics (/metrics on the
// admin port) and returns the samples without labels, e.g.
// "go_goroutines" and "process_open_fds". Labelled samples are keyed by
// their full text ("name{a=\"b\"}").
func (k *Container) Metrics(ctx context.Context) (map[string]float64, error) {
	addr, err := k.Addr(ctx, PortAdmin)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("cluster: metrics of %s: %w", k.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cluster: metrics of %s: %s", k.Name, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("cluster: metrics of %s: %w", k.Name, err)
	}
	return ParseMetrics(b), nil
}

// ParseMetrics reads Prometheus text exposition: sample name (with its
// labels, as written) → value. Comments and unparsable lines are skipped.
func ParseMetrics(b []byte) map[string]float64 {
	m := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			continue
		}
		name, val := line[:i], line[i+1:]
		// A timestamp after the value: drop it.
		if j := strings.LastIndexByte(name, ' '); j > 0 && !strings.Contains(name[j:], "}") {
			name, val = name[:j], name[j+1:]
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			m[name] = v
		}
	}
	return m
}

func merge(base, over map[string]string) map[string]string {
	for k, v := range over {
		base[k] = v
	}
	return base
}

func sortedEnv(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out) // a reproducible command line in logs
	return out
}
