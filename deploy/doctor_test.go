package deploy

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestDoctorInitStep: an init container after hosts runs doctor over the
// same registries and hosts directory, reads containerd's configuration
// where the pod mounts it, and cannot hold the pod back; the daemon is
// given the same file for its gauge.
func TestDoctorInitStep(t *testing.T) {
	pod := loadManifests(t).daemonSet.Spec.Template.Spec
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	isCmd := func(name string) func(corev1.Container) bool {
		return func(c corev1.Container) bool { return len(c.Command) >= 2 && c.Command[1] == name }
	}
	hosts := slices.IndexFunc(pod.InitContainers, isCmd("hosts"))
	doctor := slices.IndexFunc(pod.InitContainers, isCmd("doctor"))
	if hosts < 0 || doctor < hosts {
		t.Fatalf("init containers %d (hosts), %d (doctor): want doctor after hosts", hosts, doctor)
	}
	d := pod.InitContainers[doctor]
	args := d.Command
	if !slices.Contains(args, "--report-only") {
		t.Error("doctor without --report-only would fail the pod's start on any finding")
	}
	if got := flagValue(t, args, "--probe-timeout"); !strings.HasPrefix(got, "-") {
		t.Errorf("--probe-timeout %q: the daemon is not up yet, so the probe must be off", got)
	}
	if got, want := flagValues(args, "--registry"), flagValues(pod.InitContainers[hosts].Command, "--registry"); !slices.Equal(got, want) {
		t.Errorf("doctor checks %q, hosts writes %q", got, want)
	}
	if dir := flagValue(t, args, "--hosts-dir"); dir != "/etc/containerd/certs.d" || mountOf(d, volumes, "/etc/containerd/certs.d") != dir {
		t.Errorf("--hosts-dir %q: want /etc/containerd/certs.d, mounted there (containerd's config_path names it)", dir)
	}
	if m := flagValue(t, args, "--mirror"); m != "127.0.0.1:5050" {
		t.Errorf("--mirror %q, want 127.0.0.1:5050, where serve listens", m)
	}
	for _, c := range []corev1.Container{d, pod.Containers[0]} {
		file := flagValue(t, append(slices.Clone(c.Command), c.Args...), "--containerd-config")
		mp := mountOf(c, volumes, "/etc/containerd")
		if mp == "" || file != filepath.Join(mp, "config.toml") {
			t.Errorf("%s: --containerd-config %q is not config.toml where /etc/containerd is mounted (%q)", c.Name, file, mp)
		}
		for _, vm := range c.VolumeMounts {
			if vm.MountPath == mp && !vm.ReadOnly {
				t.Errorf("%s mounts containerd's configuration writable", c.Name)
			}
		}
	}
}
