// Package deploy holds the files that install nodecache on a node: the
// systemd units in systemd/, the Kubernetes DaemonSet in daemonset.yaml,
// the same as a Helm chart in helm/nodecache, and a Grafana dashboard for
// its metrics.
//
// The package has no code. Its tests parse those files the way their
// consumers do (strict Kubernetes types, systemd unit syntax, PromQL
// metric names, the chart rendered by Helm's own packages) so that a
// misspelt field, a missing probe or a metric the daemon does not export
// fails the build rather than a node.
package deploy
