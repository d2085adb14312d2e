package deploy

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

const (
	// chartDir is the Helm chart, rendered here with helm's own Go
	// packages, as `helm template` and `helm install` render it.
	chartDir = "helm/nodecache"
	// The release the chart's defaults are compared under: the names and
	// namespace of daemonset.yaml.
	releaseName      = "nodecache"
	releaseNamespace = "kube-system"
)

// helmLabels are the labels the chart adds to daemonset.yaml's by Helm's
// conventions; instance is also a selector label, so that two releases
// never select each other's pods.
var helmLabels = []string{
	"app.kubernetes.io/instance",
	"app.kubernetes.io/version",
	"app.kubernetes.io/managed-by",
	"helm.sh/chart",
}

// chartObjects is a rendered chart, decoded.
type chartObjects struct {
	manifests
	serviceMonitors []*monitoringv1.ServiceMonitor
}

// renderChart renders the chart with values over its defaults, as `helm
// template --namespace kube-system nodecache deploy/helm/nodecache`
// would, in strict mode (a template that reads a value the chart does not
// define fails). values.schema.json is checked on the way.
func renderChart(t *testing.T, values map[string]any) (map[string]string, error) {
	t.Helper()
	return renderRelease(t, releaseName, releaseNamespace, values)
}

// renderRelease renders the chart as release name in namespace.
func renderRelease(t *testing.T, name, namespace string, values map[string]any) (map[string]string, error) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	opts := chartutil.ReleaseOptions{Name: name, Namespace: namespace, Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValues(ch, values, opts, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	return engine.Engine{Strict: true}.Render(ch, rv)
}

// mustRender renders the chart and decodes every object it produces
// strictly into its API type.
func mustRender(t *testing.T, values map[string]any) chartObjects {
	t.Helper()
	files, err := renderChart(t, values)
	if err != nil {
		t.Fatalf("render with %v: %v", values, err)
	}
	objs, err := decodeChart(files)
	if err != nil {
		t.Fatalf("render with %v: %v", values, err)
	}
	return objs
}

// decodeChart decodes the rendered templates: ServiceMonitors into the
// prometheus-operator type, everything else as decodeManifests decodes
// daemonset.yaml. Both are strict. NOTES.txt and partials are not
// manifests.
func decodeChart(files map[string]string) (chartObjects, error) {
	var objs chartObjects
	var rest []string
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		for _, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(files[name], -1) {
			if onlyComments(doc) {
				continue
			}
			if !strings.Contains(doc, "\nkind: ServiceMonitor\n") {
				rest = append(rest, doc)
				continue
			}
			sm := new(monitoringv1.ServiceMonitor)
			if err := decodeStrict(doc, sm); err != nil {
				return objs, fmt.Errorf("%s: ServiceMonitor: %w", name, err)
			}
			if sm.APIVersion != "monitoring.coreos.com/v1" {
				return objs, fmt.Errorf("%s: ServiceMonitor apiVersion %q", name, sm.APIVersion)
			}
			objs.serviceMonitors = append(objs.serviceMonitors, sm)
		}
	}
	var err error
	objs.manifests, err = decodeManifests([]byte(strings.Join(rest, "\n---\n")))
	return objs, err
}

// withoutHelmLabels deletes the helmLabels from every label map and
// selector of m, in place, and reports any that was missing from an
// object's own labels, or the instance label from the pods'.
func withoutHelmLabels(m manifests) []string {
	var missing []string
	own := []string{"app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"}
	strip := func(what string, labels map[string]string, required []string) {
		for _, k := range required {
			if _, ok := labels[k]; !ok {
				missing = append(missing, what+" lacks "+k)
			}
		}
		for _, k := range helmLabels {
			delete(labels, k)
		}
	}
	ds := m.daemonSet
	strip("DaemonSet", ds.Labels, own)
	strip("DaemonSet selector", ds.Spec.Selector.MatchLabels, nil)
	// A label that changes with the chart's version would restart every
	// pod on an upgrade that changes nothing else.
	strip("pod template", ds.Spec.Template.Labels, []string{"app.kubernetes.io/instance"})
	for _, s := range m.services {
		strip("Service "+s.Name, s.Labels, own)
		strip("Service "+s.Name+" selector", s.Spec.Selector, nil)
	}
	for _, sa := range m.serviceAccounts {
		strip("ServiceAccount "+sa.Name, sa.Labels, own)
	}
	return missing
}

// TestChartDefaultIsDaemonSet renders the chart with its defaults and
// compares every object, field by field, with daemonset.yaml's, after
// taking out the labels Helm adds. The two describe one installation:
// a change to one that is not made to the other fails here.
func TestChartDefaultIsDaemonSet(t *testing.T) {
	got := mustRender(t, nil)
	want := loadManifests(t)
	if len(got.serviceMonitors) != 0 {
		t.Errorf("%d ServiceMonitors by default, want none", len(got.serviceMonitors))
	}
	// The doctor step is a value, so that the chart can follow
	// daemonset.yaml whether or not it runs the step; name the value to
	// change rather than only the difference.
	hasDoctor := func(m manifests) bool {
		return slices.ContainsFunc(m.daemonSet.Spec.Template.Spec.InitContainers, func(c corev1.Container) bool {
			return len(c.Command) >= 2 && c.Command[1] == "doctor"
		})
	}
	if d := hasDoctor(want); d != hasDoctor(got.manifests) {
		t.Errorf("daemonset.yaml runs the doctor step: %v; set doctor.enabled to %v in values.yaml", d, d)
	}
	for _, k := range []string{"helm.sh/chart", "app.kubernetes.io/version"} {
		if v, ok := got.daemonSet.Spec.Template.Labels[k]; ok {
			t.Errorf("pod template label %s=%s: a new chart version alone would restart every pod", k, v)
		}
	}
	for _, m := range withoutHelmLabels(got.manifests) {
		t.Errorf("chart: %s", m)
	}
	if len(got.services) != len(want.services) || len(got.serviceAccounts) != len(want.serviceAccounts) ||
		len(got.secrets) != 0 {
		t.Fatalf("chart renders %d Services, %d ServiceAccounts and %d Secrets; daemonset.yaml has %d, %d and none",
			len(got.services), len(got.serviceAccounts), len(got.secrets), len(want.services), len(want.serviceAccounts))
	}
	pairs := []struct {
		what      string
		got, want any
	}{
		{"DaemonSet", got.daemonSet, want.daemonSet},
		{"Service", got.services[0], want.services[0]},
		{"ServiceAccount", got.serviceAccounts[0], want.serviceAccounts[0]},
	}
	for _, p := range pairs {
		if !equality.Semantic.DeepEqual(p.got, p.want) {
			t.Errorf("%s differs from daemonset.yaml's (-daemonset.yaml +chart):\n%s", p.what, cmp.Diff(p.want, p.got))
		}
	}
}

// checkRendered runs on a rendered DaemonSet the checks TestDaemonSet
// runs on daemonset.yaml's: container security, env references, the
// serve command and its probes, and the hosts.toml wiring.
func checkRendered(t *testing.T, m manifests) {
	t.Helper()
	pod := m.daemonSet.Spec.Template.Spec
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		checkContainerSecurity(t, c)
		checkEnvReferences(t, c)
		for _, vm := range c.VolumeMounts {
			if _, ok := volumes[vm.Name]; !ok {
				t.Errorf("container %s mounts undeclared volume %q", c.Name, vm.Name)
			}
		}
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	checkServe(t, pod.Containers[0], volumes)
	checkHostsWiring(t, pod, volumes)
	// checkPeers wants daemonset.yaml's peer port and Service.
	if slices.Equal(flagValues(serveArgs(m), "--peer-listen"), []string{"$(NODE_IP):5051"}) {
		// It takes every Secret volume for the peer secret.
		peerVolumes := maps.Clone(volumes)
		delete(peerVolumes, "node-credentials")
		checkPeers(t, m, pod.Containers[0], peerVolumes)
	}
}

// The default render also passes every check daemonset.yaml passes.
func TestChartDefaultPassesDaemonSetChecks(t *testing.T) {
	checkRendered(t, mustRender(t, nil).manifests)
}

// Another release name and namespace rename every object and reach the
// peer DNS name, and the ServiceAccount, Service and pods still find
// each other.
func TestChartReleaseNameAndNamespace(t *testing.T) {
	files, err := renderRelease(t, "cache", "infra", nil)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeChart(files)
	if err != nil {
		t.Fatal(err)
	}
	ds, svc, sa := objs.daemonSet, objs.services[0], objs.serviceAccounts[0]
	for _, o := range []struct{ kind, name, ns, want string }{
		{"DaemonSet", ds.Name, ds.Namespace, "cache-nodecache"},
		{"Service", svc.Name, svc.Namespace, "cache-nodecache-peers"},
		{"ServiceAccount", sa.Name, sa.Namespace, "cache-nodecache"},
	} {
		if o.name != o.want || o.ns != "infra" {
			t.Errorf("%s is %s/%s, want infra/%s", o.kind, o.ns, o.name, o.want)
		}
	}
	pod := ds.Spec.Template
	if pod.Spec.ServiceAccountName != sa.Name {
		t.Errorf("serviceAccountName = %q", pod.Spec.ServiceAccountName)
	}
	if !matches(svc.Spec.Selector, pod.Labels) || !matches(ds.Spec.Selector.MatchLabels, pod.Labels) {
		t.Errorf("selectors %v and %v do not select the pods %v", svc.Spec.Selector, ds.Spec.Selector.MatchLabels, pod.Labels)
	}
	if pod.Labels["app.kubernetes.io/instance"] != "cache" {
		t.Errorf("pods' instance label = %q, want the release name", pod.Labels["app.kubernetes.io/instance"])
	}
	wantFlag("--peer-dns", "cache-nodecache-peers.infra.svc.cluster.local:5051")(t, objs.manifests)
}
