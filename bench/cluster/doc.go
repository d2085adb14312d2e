// Package cluster holds BenchmarkCluster, the rollout of one image to K
// nodecache nodes with peers on, on one machine: each node has its own
// 127.0.0.x address, store, peer listener and client server, its peer
// egress paced like a network card and its upstream paced like its share
// of the registry's bandwidth (a 10:2 ratio by default). For K = 1, 4, 8,
// 16 and 32 it prints upstream bytes ÷ image, the busiest node's peer
// egress ÷ image and the rollout time ÷ the K=1 time, then the model of
// docs/peers.md for K = 100 and 1000 with a 5 GiB layer.
//
// Run it with `make bench-cluster`, or
//
//	go test -run '^$' -bench Cluster -benchtime 1x -v ./bench/cluster
//
// NODECACHE_BENCH_LAYER_MIB (256), NODECACHE_BENCH_UPSTREAM_MIBPS (8) and
// NODECACHE_BENCH_NIC_MIBPS (40) change the large layer and the two
// rates; NODECACHE_BENCH_NODES ("1,4,8,16,32") the cluster sizes.
package cluster
