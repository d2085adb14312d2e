package deploy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The daemon's shutdown grace; every stop timeout must exceed it.
const shutdownGrace = 30 * time.Second

// manifests is daemonset.yaml, decoded.
type manifests struct {
	daemonSet       *appsv1.DaemonSet
	services        []*corev1.Service
	serviceAccounts []*corev1.ServiceAccount
	secrets         []*corev1.Secret
}

// decodeStrict decodes one YAML document the way the API server decodes
// a request with fieldValidation=Strict: unknown fields, duplicate keys
// and keys whose case differs from the field's name are errors. It does
// not use yaml.UnmarshalStrict, whose encoding/json matches names without
// regard to case and so accepts "clusterIp" for "clusterIP", a field the
// API server would drop.
func decodeStrict(doc string, into any) error {
	js, err := yaml.YAMLToJSONStrict([]byte(doc))
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(js, into)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// decodeManifests decodes every document of a multi-document YAML file
// into the Kubernetes type its kind names. Decoding is strict, so a
// field the API does not know, such as a misspelt one, is an error
// instead of being dropped with at most a warning.
func decodeManifests(data []byte) (manifests, error) {
	var m manifests
	for i, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(data), -1) {
		if onlyComments(doc) {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return m, fmt.Errorf("document %d: %w", i, err)
		}
		var err error
		switch head.APIVersion + " " + head.Kind {
		case "apps/v1 DaemonSet":
			if m.daemonSet != nil {
				return m, fmt.Errorf("document %d: a second DaemonSet", i)
			}
			m.daemonSet = new(appsv1.DaemonSet)
			err = decodeStrict(doc, m.daemonSet)
		case "v1 Service":
			m.services = append(m.services, new(corev1.Service))
			err = decodeStrict(doc, m.services[len(m.services)-1])
		case "v1 ServiceAccount":
			m.serviceAccounts = append(m.serviceAccounts, new(corev1.ServiceAccount))
			err = decodeStrict(doc, m.serviceAccounts[len(m.serviceAccounts)-1])
		case "v1 Secret":
			m.secrets = append(m.secrets, new(corev1.Secret))
			err = decodeStrict(doc, m.secrets[len(m.secrets)-1])
		default:
			err = fmt.Errorf("unexpected apiVersion %q kind %q", head.APIVersion, head.Kind)
		}
		if err != nil {
			return m, fmt.Errorf("document %d (%s): %w", i, head.Kind, err)
		}
	}
	if m.daemonSet == nil {
		return m, fmt.Errorf("no DaemonSet")
	}
	return m, nil
}

func onlyComments(doc string) bool {
	for line := range strings.Lines(doc) {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	data, err := os.ReadFile("daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeManifests(data)
	if err != nil {
		t.Fatalf("daemonset.yaml: %v", err)
	}
	return m
}

// The strict decoding is what catches misspelt fields, so check that it
// does on the real file with one field misspelt.
func TestDecodeManifestsIsStrict(t *testing.T) {
	data, err := os.ReadFile("daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ from, to string }{
		{"hostNetwork: true", "hostNetwrk: true"},
		{"clusterIP: None", "clusterIp: None"},
		{"automountServiceAccountToken: false\n---", "automountServiceAccountTokens: false\n---"},
		{"  name: nodecache\n  namespace", "  name: nodecache\n  name: other\n  namespace"},
	} {
		if !strings.Contains(string(data), c.from) {
			t.Fatalf("daemonset.yaml no longer contains %q; update this test", c.from)
		}
		bad := strings.Replace(string(data), c.from, c.to, 1)
		if _, err := decodeManifests([]byte(bad)); err == nil {
			t.Errorf("%q → %q: decoded without error", c.from, c.to)
		}
	}
}

// flagValues returns the values of --name in args, written either as
// --name=value or as --name value.
func flagValues(args []string, name string) []string {
	var vals []string
	for i, a := range args {
		switch {
		case strings.HasPrefix(a, name+"="):
			vals = append(vals, strings.TrimPrefix(a, name+"="))
		case a == name && i+1 < len(args):
			vals = append(vals, args[i+1])
		}
	}
	return vals
}

func flagValue(t *testing.T, args []string, name string) string {
	t.Helper()
	v := flagValues(args, name)
	if len(v) != 1 {
		t.Errorf("%s given %d times in %q, want once", name, len(v), args)
		return ""
	}
	return v[0]
}

func TestDaemonSet(t *testing.T) {
	m := loadManifests(t)
	if len(m.services) != 1 || len(m.serviceAccounts) != 1 {
		t.Fatalf("%d Services and %d ServiceAccounts, want one of each", len(m.services), len(m.serviceAccounts))
	}
	ds := m.daemonSet
	pod := ds.Spec.Template.Spec

	for _, obj := range []struct{ kind, ns string }{
		{"DaemonSet", ds.Namespace},
		{"Service", m.services[0].Namespace},
		{"ServiceAccount", m.serviceAccounts[0].Namespace},
	} {
		if obj.ns != "kube-system" {
			t.Errorf("%s namespace = %q, want kube-system", obj.kind, obj.ns)
		}
	}
	if !pod.HostNetwork {
		t.Error("hostNetwork is off: containerd could not reach 127.0.0.1:5050")
	}
	if pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("dnsPolicy = %q: the peer Service name would not resolve", pod.DNSPolicy)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName = %q", pod.PriorityClassName)
	}
	if !slices.ContainsFunc(pod.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == ""
	}) {
		t.Errorf("no toleration of every taint in %+v", pod.Tolerations)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil {
		t.Errorf("terminationGracePeriodSeconds unset (30s), want above %v", shutdownGrace)
	} else if time.Duration(*g)*time.Second <= shutdownGrace {
		t.Errorf("terminationGracePeriodSeconds = %d, want above %v", *g, shutdownGrace)
	}
	if s := ds.Spec.UpdateStrategy; s.Type != appsv1.RollingUpdateDaemonSetStrategyType ||
		s.RollingUpdate == nil || s.RollingUpdate.MaxUnavailable == nil {
		t.Errorf("updateStrategy = %+v, want RollingUpdate with maxUnavailable", s)
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("DaemonSet selector %s=%s does not match its pod template", k, v)
		}
	}
	if sa := m.serviceAccounts[0]; pod.ServiceAccountName != sa.Name {
		t.Errorf("serviceAccountName = %q, ServiceAccount is %q", pod.ServiceAccountName, sa.Name)
	}

	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, want := range []string{"/var/lib/nodecache", "/etc/containerd/certs.d"} {
		if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool {
			hp := v.HostPath
			return hp != nil && hp.Path == want && hp.Type != nil && *hp.Type == corev1.HostPathDirectoryOrCreate
		}) {
			t.Errorf("no hostPath volume %s of type DirectoryOrCreate", want)
		}
	}

	all := append(slices.Clone(pod.InitContainers), pod.Containers...)
	for _, c := range all {
		checkContainerSecurity(t, c)
		if c.Resources.Limits.Memory().IsZero() {
			t.Errorf("container %s has no memory limit", c.Name)
		}
		for _, vm := range c.VolumeMounts {
			if _, ok := volumes[vm.Name]; !ok {
				t.Errorf("container %s mounts undeclared volume %q", c.Name, vm.Name)
			}
		}
		checkEnvReferences(t, c)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	main := pod.Containers[0]
	checkServe(t, main, volumes)
	checkHostsWiring(t, pod, volumes)
	checkPeers(t, m, main, volumes)
}

func checkContainerSecurity(t *testing.T, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("container %s has no securityContext", c.Name)
		return
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		len(sc.Capabilities.Add) != 0 {
		t.Errorf("container %s: capabilities = %+v, want drop ALL and add none", c.Name, sc.Capabilities)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("container %s is privileged", c.Name)
	}
}

// checkEnvReferences fails on a $(VAR) in the command that the container
// does not define: Kubernetes leaves such a reference as it is, and the
// daemon would try to listen on the literal "$(NODE_IP):5051".
func checkEnvReferences(t *testing.T, c corev1.Container) {
	t.Helper()
	defined := map[string]bool{}
	for _, e := range c.Env {
		defined[e.Name] = true
	}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, a := range append(slices.Clone(c.Command), c.Args...) {
		for _, sub := range ref.FindAllStringSubmatch(a, -1) {
			if !defined[sub[1]] {
				t.Errorf("container %s: %q uses $(%s), which its env does not define", c.Name, a, sub[1])
			}
		}
	}
}

func checkServe(t *testing.T, c corev1.Container, volumes map[string]corev1.Volume) {
	t.Helper()
	args := append(slices.Clone(c.Command), c.Args...)
	if len(args) < 2 || args[0] != "nodecache" || args[1] != "serve" {
		t.Fatalf("container %s runs %q, want nodecache serve", c.Name, args)
	}
	if !slices.Contains(flagValues(args, "--listen"), "127.0.0.1:5050") {
		t.Errorf("nodecache serve does not listen on 127.0.0.1:5050: %q", args)
	}
	if mp := mountOf(c, volumes, "/var/lib/nodecache"); mp == "" || flagValue(t, args, "--data-dir") != mp {
		t.Errorf("--data-dir %q is not where the /var/lib/nodecache hostPath is mounted (%q)",
			flagValues(args, "--data-dir"), mp)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s is not an httpGet probe", p.name)
			continue
		}
		g := p.probe.HTTPGet
		// With the host network and no host, the kubelet would probe the
		// node IP, where the mirror does not listen.
		if g.Path != p.path || g.Host != "127.0.0.1" || g.Port.IntValue() != 5050 {
			t.Errorf("%s = %s:%s%s, want 127.0.0.1:5050%s", p.name, g.Host, g.Port.String(), g.Path, p.path)
		}
	}
	if c.Resources.Limits.Memory().Cmp(resource.MustParse("128Mi")) < 0 {
		t.Errorf("memory limit %v leaves too little room above the daemon's ~30 MiB", c.Resources.Limits.Memory())
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("requests = %v, want cpu and memory", c.Resources.Requests)
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "NODE_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
			e.ValueFrom.FieldRef.FieldPath == "status.hostIP"
	}) {
		t.Error("NODE_IP is not taken from status.hostIP")
	}
}

// mountOf returns where container c mounts the hostPath volume of the
// given node path, or "".
func mountOf(c corev1.Container, volumes map[string]corev1.Volume, hostPath string) string {
	for _, vm := range c.VolumeMounts {
		if v := volumes[vm.Name]; v.HostPath != nil && v.HostPath.Path == hostPath {
			return vm.MountPath
		}
	}
	return ""
}

// checkHostsWiring checks that the init container and the postStart hook
// point containerd at the mirror and the preStop hook undoes exactly
// what they did.
func checkHostsWiring(t *testing.T, pod corev1.PodSpec, volumes map[string]corev1.Volume) {
	t.Helper()
	main := pod.Containers[0]
	init := slices.IndexFunc(pod.InitContainers, func(c corev1.Container) bool {
		return len(c.Command) >= 2 && c.Command[0] == "nodecache" && c.Command[1] == "hosts"
	})
	if init < 0 {
		t.Fatal("no init container runs nodecache hosts")
	}
	if main.Lifecycle == nil || main.Lifecycle.PostStart == nil || main.Lifecycle.PostStart.Exec == nil ||
		main.Lifecycle.PreStop == nil || main.Lifecycle.PreStop.Exec == nil {
		t.Fatal("the nodecache container lacks an exec postStart or preStop hook")
	}
	type run struct {
		where string
		c     corev1.Container
		cmd   []string
	}
	runs := []run{
		{"init container", pod.InitContainers[init], pod.InitContainers[init].Command},
		{"postStart", main, main.Lifecycle.PostStart.Exec.Command},
		{"preStop", main, main.Lifecycle.PreStop.Exec.Command},
	}
	want := flagValues(runs[0].cmd, "--registry")
	if len(want) == 0 {
		t.Errorf("init container names no --registry: %q", runs[0].cmd)
	}
	for _, r := range runs {
		if len(r.cmd) < 2 || r.cmd[0] != "nodecache" || r.cmd[1] != "hosts" {
			t.Errorf("%s runs %q, want nodecache hosts", r.where, r.cmd)
			continue
		}
		dir := flagValue(t, r.cmd, "--dir")
		if mp := mountOf(r.c, volumes, "/etc/containerd/certs.d"); dir == "" || dir != mp {
			t.Errorf("%s: --dir %q is not where /etc/containerd/certs.d is mounted (%q)", r.where, dir, mp)
		}
		if got := flagValues(r.cmd, "--registry"); !slices.Equal(got, want) {
			t.Errorf("%s: registries %q, init container has %q", r.where, got, want)
		}
		removes := slices.Contains(r.cmd, "--remove")
		if removes != (r.where == "preStop") {
			t.Errorf("%s: --remove given = %v", r.where, removes)
		}
		if !removes && !slices.Contains(flagValues(r.cmd, "--mirror"), "http://127.0.0.1:5050") {
			t.Errorf("%s: --mirror is not http://127.0.0.1:5050, where serve listens: %q", r.where, r.cmd)
		}
	}
}

// checkPeers checks that the peer listener, the headless Service and the
// secret fit together.
func checkPeers(t *testing.T, m manifests, c corev1.Container, volumes map[string]corev1.Volume) {
	t.Helper()
	args := append(slices.Clone(c.Command), c.Args...)
	if got := flagValue(t, args, "--peer-listen"); got != "$(NODE_IP):5051" {
		t.Errorf("--peer-listen = %q", got)
	}
	if got := flagValue(t, args, "--advertise"); got != "$(NODE_IP):5051" {
		t.Errorf("--advertise = %q", got)
	}

	svc := m.services[0]
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s clusterIP = %q, want None (headless)", svc.Name, svc.Spec.ClusterIP)
	}
	if want := svc.Name + "." + svc.Namespace + ".svc.cluster.local:5051"; flagValue(t, args, "--peer-dns") != want {
		t.Errorf("--peer-dns = %q, want %q", flagValues(args, "--peer-dns"), want)
	}
	tmpl := m.daemonSet.Spec.Template.Labels
	if len(svc.Spec.Selector) == 0 {
		t.Error("Service has no selector")
	}
	for k, v := range svc.Spec.Selector {
		if tmpl[k] != v {
			t.Errorf("Service selector %s=%s does not match the DaemonSet's pods", k, v)
		}
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 5051 {
		t.Fatalf("Service ports = %+v, want 5051", svc.Spec.Ports)
	}
	target := svc.Spec.Ports[0].TargetPort
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
		return p.ContainerPort == 5051 && (target.String() == p.Name || target.IntValue() == 5051)
	}) {
		t.Errorf("Service targetPort %s is not the container's port 5051", target.String())
	}

	// A secret value in this file would be the same in every cluster
	// that applies it.
	for _, sec := range m.secrets {
		if len(sec.Data) > 0 || len(sec.StringData) > 0 {
			t.Errorf("Secret %s carries a value; create it per cluster instead", sec.Name)
		}
	}

	// --peer-secret-file must be a file of the mounted Secret.
	file := flagValue(t, args, "--peer-secret-file")
	found := false
	for _, vm := range c.VolumeMounts {
		s := volumes[vm.Name].Secret
		if s == nil {
			continue
		}
		if s.SecretName != "nodecache-peer-secret" {
			t.Errorf("secret volume %s uses Secret %q, docs/operations.md creates nodecache-peer-secret", vm.Name, s.SecretName)
		}
		if s.Optional != nil && *s.Optional {
			t.Errorf("secret volume %s is optional: a pod without it would start with a missing --peer-secret-file", vm.Name)
		}
		for _, it := range s.Items {
			if filepath.Join(vm.MountPath, it.Path) == file && it.Key == "secret" {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("--peer-secret-file %q is not key \"secret\" of a mounted Secret", file)
	}
}
