package deploy

import (
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"nodecache/pkg/mirror"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// values parses a YAML snippet of chart values.
func values(t *testing.T, s string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("values %q: %v", s, err)
	}
	return v
}

func serveArgs(m manifests) []string {
	c := m.daemonSet.Spec.Template.Spec.Containers[0]
	return append(slices.Clone(c.Command), c.Args...)
}

// Each value reaches the flag or field it names, and the result still
// passes daemonset.yaml's checks.
func TestChartValuesReachFlags(t *testing.T) {
	for _, c := range []struct {
		name   string
		values string
		check  func(t *testing.T, m manifests)
	}{
		{"maxSize", `maxSize: 50GiB`, wantFlag("--max-size", "50GiB")},
		{"maxSize in Kubernetes units", `maxSize: 512Mi`, wantFlag("--max-size", "512Mi")},
		{"minFree", `minFree: 5%`, wantFlag("--min-free", "5%")},
		{"ttl", `ttl: 72h`, wantFlag("--ttl", "72h")},
		{"ttl zero", `ttl: "0"`, wantFlag("--ttl", "0")},
		{"tagTTL", `tagTTL: 1m`, wantFlag("--tag-ttl", "1m")},
		{"extraArgs", `extraArgs: ["--max-concurrent-fills=8"]`, wantFlag("--max-concurrent-fills", "8")},
		{"metrics port", `metrics: {port: 9500}`, checkMetricsPort(9500)},
		{"registries", `{registries: [docker.io, registry.example.com:5000], allowRegistries: [docker.io, registry.example.com:5000]}`, checkRegistries("docker.io", "registry.example.com:5000")},
		{"allowRegistries", `{allowRegistries: [registry.example.com, docker.io], registries: [registry.example.com]}`, func(t *testing.T, m manifests) {
			if got := flagValues(serveArgs(m), "--allow-registry"); !slices.Equal(got, []string{"registry.example.com", "docker.io"}) {
				t.Errorf("--allow-registry = %q", got)
			}
			checkRegistries("registry.example.com")(t, m)
		}},
		{"peers port", `peers: {port: 6000}`, func(t *testing.T, m manifests) {
			wantFlag("--peer-listen", "$(NODE_IP):6000")(t, m)
			wantFlag("--peer-dns", "nodecache-peers.kube-system.svc.cluster.local:6000")(t, m)
			if p := m.services[0].Spec.Ports[0]; p.Port != 6000 || p.TargetPort.String() != "peer" {
				t.Errorf("peer Service port = %+v", p)
			}
		}},
		{"peers off", `peers: {enabled: false}`, checkNoPeers},
		{"docker config", `nodeCredentials: {secretName: regcred}`,
			checkCredentials("--docker-config", "regcred", ".dockerconfigjson")},
		{"credentials file", `nodeCredentials: {secretName: creds, flag: credentials-file, key: node.toml}`,
			checkCredentials("--credentials-file", "creds", "node.toml")},
		{"image digest", `image: {digest: "sha256:` + strings.Repeat("ab", 32) + `"}`, func(t *testing.T, m manifests) {
			pod := m.daemonSet.Spec.Template.Spec
			want := "ghcr.io/nodecache/nodecache@sha256:" + strings.Repeat("ab", 32)
			for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
				if c.Image != want {
					t.Errorf("container %s image = %q, want %q", c.Name, c.Image, want)
				}
			}
		}},
		{"resources", `resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 1Gi}}`, func(t *testing.T, m manifests) {
			r := m.daemonSet.Spec.Template.Spec.Containers[0].Resources
			if r.Limits.Memory().Cmp(resource.MustParse("1Gi")) != 0 || r.Requests.Cpu().Cmp(resource.MustParse("100m")) != 0 {
				t.Errorf("resources = %+v", r)
			}
		}},
		{"tolerations", `tolerations: [{key: dedicated, operator: Equal, value: builds, effect: NoSchedule}]`, func(t *testing.T, m manifests) {
			want := []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "builds", Effect: corev1.TaintEffectNoSchedule}}
			if got := m.daemonSet.Spec.Template.Spec.Tolerations; !slices.Equal(got, want) {
				t.Errorf("tolerations = %+v, want %+v", got, want)
			}
		}},
		{"priorityClassName", `priorityClassName: node-cache`, func(t *testing.T, m manifests) {
			if got := m.daemonSet.Spec.Template.Spec.PriorityClassName; got != "node-cache" {
				t.Errorf("priorityClassName = %q", got)
			}
		}},
		{"podAnnotations", `podAnnotations: {prometheus.io/scrape: "false", example.com/team: cache}`, func(t *testing.T, m manifests) {
			got := m.daemonSet.Spec.Template.Annotations
			want := map[string]string{"prometheus.io/scrape": "false", "prometheus.io/port": "9402",
				"prometheus.io/path": "/metrics", "example.com/team": "cache"}
			if !maps.Equal(got, want) {
				t.Errorf("pod annotations = %v, want %v", got, want)
			}
		}},
		{"hostsDir and dataDir", `{hostsDir: /etc/k3s/certs.d, dataDir: /data/nodecache}`, func(t *testing.T, m manifests) {
			paths := map[string]string{}
			for _, v := range m.daemonSet.Spec.Template.Spec.Volumes {
				if v.HostPath != nil {
					paths[v.Name] = v.HostPath.Path
				}
			}
			if paths["containerd-certs"] != "/etc/k3s/certs.d" || paths["data"] != "/data/nodecache" {
				t.Errorf("hostPath volumes = %v", paths)
			}
			// doctor compares containerd's config_path, a path on the
			// node, with --hosts-dir: it must be hostsDir itself, not
			// where some other path is mounted.
			pod := m.daemonSet.Spec.Template.Spec
			volumes := map[string]corev1.Volume{}
			for _, v := range pod.Volumes {
				volumes[v.Name] = v
			}
			for _, c := range pod.InitContainers {
				switch c.Command[1] {
				case "doctor":
					if got := flagValue(t, c.Command, "--hosts-dir"); got != "/etc/k3s/certs.d" ||
						mountOf(c, volumes, "/etc/k3s/certs.d") != got {
						t.Errorf("doctor --hosts-dir %q, want /etc/k3s/certs.d mounted there", got)
					}
				case "hosts":
					if got := flagValue(t, c.Command, "--dir"); got != mountOf(c, volumes, "/etc/k3s/certs.d") {
						t.Errorf("hosts --dir %q is not where /etc/k3s/certs.d is mounted", got)
					}
				}
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mustRender(t, values(t, c.values)).manifests
			c.check(t, m)
			if c.name != "hostsDir and dataDir" { // checkRendered looks for the default paths
				checkRendered(t, m)
			}
		})
	}
}

// wantFlag checks that nodecache serve is given name=value exactly once.
func wantFlag(name, value string) func(*testing.T, manifests) {
	return func(t *testing.T, m manifests) {
		t.Helper()
		if got := flagValues(serveArgs(m), name); !slices.Equal(got, []string{value}) {
			t.Errorf("%s = %q, want %q", name, got, value)
		}
	}
}

func checkMetricsPort(port int32) func(*testing.T, manifests) {
	return func(t *testing.T, m manifests) {
		t.Helper()
		wantFlag("--metrics-listen", "$(NODE_IP):"+itoa(port))(t, m)
		tmpl := m.daemonSet.Spec.Template
		if got := tmpl.Annotations["prometheus.io/port"]; got != itoa(port) {
			t.Errorf("prometheus.io/port = %q", got)
		}
		if !slices.ContainsFunc(tmpl.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool {
			return p.Name == "metrics" && p.ContainerPort == port
		}) {
			t.Errorf("no container port metrics %d", port)
		}
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }

// checkRegistries checks the registries of the init container; the
// hooks must name the same ones, which checkRendered checks.
func checkRegistries(want ...string) func(*testing.T, manifests) {
	return func(t *testing.T, m manifests) {
		t.Helper()
		if got := flagValues(m.daemonSet.Spec.Template.Spec.InitContainers[0].Command, "--registry"); !slices.Equal(got, want) {
			t.Errorf("init container registries = %q, want %q", got, want)
		}
	}
}

func checkNoPeers(t *testing.T, m manifests) {
	t.Helper()
	for _, f := range []string{"--peer-listen", "--advertise", "--peer-dns", "--peer-secret-file"} {
		if v := flagValues(serveArgs(m), f); len(v) > 0 {
			t.Errorf("peers off, but %s = %q", f, v)
		}
	}
	if len(m.services) != 0 {
		t.Errorf("peers off, but %d Services", len(m.services))
	}
	pod := m.daemonSet.Spec.Template.Spec
	if slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Secret != nil }) {
		t.Error("peers off, but a Secret volume: the pod would wait for a Secret it does not use")
	}
	if slices.ContainsFunc(pod.Containers[0].Ports, func(p corev1.ContainerPort) bool { return p.Name == "peer" }) {
		t.Error("peers off, but a peer port")
	}
}

// checkCredentials checks that flag names a file of the whole Secret
// secret, mounted read-only (not by subPath, which the kubelet never
// updates).
func checkCredentials(flag, secret, key string) func(*testing.T, manifests) {
	return func(t *testing.T, m manifests) {
		t.Helper()
		pod := m.daemonSet.Spec.Template.Spec
		file := flagValue(t, serveArgs(m), flag)
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == secret })
		if i < 0 {
			t.Fatalf("no volume of Secret %s", secret)
		}
		vol := pod.Volumes[i]
		if len(vol.Secret.Items) != 0 {
			t.Errorf("Secret %s mounts only %+v", secret, vol.Secret.Items)
		}
		for _, vm := range pod.Containers[0].VolumeMounts {
			if vm.Name == vol.Name {
				if !vm.ReadOnly || vm.SubPath != "" || vm.MountPath+"/"+key != file {
					t.Errorf("mount %+v does not hold %s=%s", vm, flag, file)
				}
				return
			}
		}
		t.Errorf("Secret %s is not mounted", secret)
	}
}

// Values the daemon would refuse, or the chart would drop, fail at
// render time with a message naming the value.
func TestChartRejectsBadValues(t *testing.T) {
	for _, c := range []struct{ values, want string }{
		{`maxsize: 50GiB`, "maxsize"},
		{`maxSize: lots`, "maxSize"},
		{`ttl: 0`, "ttl"}, // an unquoted 0 would be dropped as empty
		{`tagTTL: 30 seconds`, "tagTTL"},
		{`registries: []`, "registries"},
		// nodecache would refuse it with 403, and containerd would pull
		// it directly without a word.
		{`registries: [registry.example.com]`, "allowRegistries"},
		{`{allowRegistries: [docker.io], registries: [ghcr.io]}`, "allowRegistries"},
		{`registries: ["https://ghcr.io"]`, "registries"},
		{`image: {digest: latest}`, "digest"},
		{`metrics: {port: 0}`, "port"},
		{`nodeCredentials: {secretName: creds, flag: credentials-file, key: creds.json}`, "key"},
		{`nodeCredentials: {secretName: creds, flag: netrc}`, "flag"},
		{`serviceMonitor: {enable: true}`, "enable"},
		// A Go duration, but not one the ServiceMonitor CRD takes.
		{`serviceMonitor: {enabled: true, interval: 1.5s}`, "interval"},
		{`terminationGracePeriodSeconds: 30`, "terminationGracePeriodSeconds"},
	} {
		t.Run(c.values, func(t *testing.T) {
			_, err := renderChart(t, values(t, c.values))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("render error = %v, want one naming %s", err, c.want)
			}
		})
	}
}

// TestChartLint runs helm's linter, as `helm lint --strict` does, with the
// defaults and with every optional part turned on.
func TestChartLint(t *testing.T) {
	for _, v := range []string{
		`{}`,
		`{serviceMonitor: {enabled: true}, nodeCredentials: {secretName: regcred}, peers: {enabled: false}}`,
	} {
		l := lint.All(chartDir, values(t, v), releaseNamespace, true)
		for _, msg := range l.Messages {
			if msg.Severity > support.InfoSev {
				t.Errorf("helm lint with %s: %v", v, msg)
			}
		}
	}
}

// With serviceMonitor.enabled a ServiceMonitor scrapes the pods' metrics
// port through a Service of its own; without it, neither exists.
func TestChartServiceMonitor(t *testing.T) {
	off := mustRender(t, nil)
	if len(off.serviceMonitors) != 0 || slices.ContainsFunc(off.services, func(s *corev1.Service) bool {
		return strings.HasSuffix(s.Name, "-metrics")
	}) {
		t.Fatal("a ServiceMonitor or metrics Service while serviceMonitor.enabled is false")
	}

	on := mustRender(t, values(t, `serviceMonitor: {enabled: true, interval: 15s, labels: {release: prometheus}}`))
	checkRendered(t, on.manifests)
	if len(on.serviceMonitors) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(on.serviceMonitors))
	}
	sm := on.serviceMonitors[0]
	if sm.Namespace != releaseNamespace || sm.Labels["release"] != "prometheus" {
		t.Errorf("ServiceMonitor in %q with labels %v", sm.Namespace, sm.Labels)
	}
	if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{releaseNamespace}) {
		t.Errorf("namespaceSelector = %+v", sm.Spec.NamespaceSelector)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("endpoints = %+v", sm.Spec.Endpoints)
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Port != "metrics" || ep.Path != "/metrics" || ep.Interval != "15s" {
		t.Errorf("endpoint = port %q path %q interval %q", ep.Port, ep.Path, ep.Interval)
	}

	// The ServiceMonitor selects exactly the metrics Service, whose port
	// of that name reaches the container's metrics port, and that Service
	// selects the DaemonSet's pods.
	var selected []*corev1.Service
	for _, s := range on.services {
		if matches(sm.Spec.Selector.MatchLabels, s.Labels) {
			selected = append(selected, s)
		}
	}
	if len(selected) != 1 {
		t.Fatalf("ServiceMonitor selects %d Services, want 1", len(selected))
	}
	svc := selected[0]
	pod := on.daemonSet.Spec.Template
	if !matches(svc.Spec.Selector, pod.Labels) {
		t.Errorf("metrics Service selector %v does not select the pods %v", svc.Spec.Selector, pod.Labels)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Errorf("metrics Service ports = %+v", svc.Spec.Ports)
	}
	if !slices.ContainsFunc(pod.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" }) {
		t.Error("the container has no port named metrics")
	}
}

// matches reports whether labels carry every key=value of selector; an
// empty selector matches nothing here, unlike Kubernetes, where it would
// select everything.
func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// With doctor.enabled an init step after hosts runs `nodecache doctor`
// over the same registries and hosts directory, reads containerd's
// configuration from the node read-only and cannot hold the pod back;
// the daemon reads the same file for its gauge. Without it, none of
// that is rendered.
func TestChartDoctor(t *testing.T) {
	isDoctor := func(c corev1.Container) bool { return len(c.Command) >= 2 && c.Command[1] == "doctor" }
	off := mustRender(t, values(t, `doctor: {enabled: false}`)).manifests
	pod := off.daemonSet.Spec.Template.Spec
	if slices.ContainsFunc(pod.InitContainers, isDoctor) || len(flagValues(serveArgs(off), "--containerd-config")) > 0 ||
		slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == "containerd-config" }) {
		t.Error("doctor.enabled is false, but a doctor step, --containerd-config or its volume is rendered")
	}

	on := mustRender(t, values(t, `doctor: {enabled: true, containerdConfigDir: /etc/k3s/containerd}`)).manifests
	checkRendered(t, on)
	pod = on.daemonSet.Spec.Template.Spec
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	hosts, doctor := pod.InitContainers[0], slices.IndexFunc(pod.InitContainers, isDoctor)
	if doctor < 1 {
		t.Fatalf("no doctor step after hosts in %d init containers", len(pod.InitContainers))
	}
	d := pod.InitContainers[doctor]
	if !slices.Contains(d.Command, "--report-only") || !strings.HasPrefix(flagValue(t, d.Command, "--probe-timeout"), "-") {
		t.Errorf("doctor %q could hold the pod back or probe a daemon not yet started", d.Command)
	}
	if got, want := flagValues(d.Command, "--registry"), flagValues(hosts.Command, "--registry"); !slices.Equal(got, want) {
		t.Errorf("doctor checks %q, hosts writes %q", got, want)
	}
	if dir := flagValue(t, d.Command, "--hosts-dir"); dir != mountOf(d, volumes, "/etc/containerd/certs.d") {
		t.Errorf("doctor --hosts-dir %q is not where the hosts directory is mounted", dir)
	}
	if m := flagValue(t, d.Command, "--mirror"); m != "127.0.0.1:5050" {
		t.Errorf("doctor --mirror %q, want 127.0.0.1:5050", m)
	}
	for _, c := range []corev1.Container{d, pod.Containers[0]} {
		file := flagValue(t, append(slices.Clone(c.Command), c.Args...), "--containerd-config")
		mp := mountOf(c, volumes, "/etc/k3s/containerd")
		if mp == "" || file != mp+"/config.toml" {
			t.Errorf("%s: --containerd-config %q is not config.toml where containerdConfigDir is mounted (%q)", c.Name, file, mp)
		}
		for _, vm := range c.VolumeMounts {
			if vm.Name != "data" && vm.Name != "containerd-certs" && !vm.ReadOnly {
				t.Errorf("%s mounts %s writable", c.Name, vm.Name)
			}
		}
	}
}

// The chart's copy of the daemon's default allow-list, which decides
// whether registries needs allowRegistries, is the daemon's list.
func TestChartDefaultAllowList(t *testing.T) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?s)define "nodecache.defaultAllowList" -}}\s*(\[.*?\])\s*{{- end`)
	var list []string
	for _, f := range ch.Templates {
		if m := re.FindSubmatch(f.Data); m != nil {
			if err := json.Unmarshal(m[1], &list); err != nil {
				t.Fatalf("%s: %v", f.Name, err)
			}
		}
	}
	if !slices.Equal(list, mirror.DefaultAllowList) {
		t.Errorf("the chart's default allow-list is %q, the daemon's %q", list, mirror.DefaultAllowList)
	}
	for _, r := range mirror.DefaultAllowList {
		if _, err := renderChart(t, map[string]any{"registries": []any{r}}); err != nil {
			t.Errorf("registries [%s]: %v", r, err)
		}
	}
}
