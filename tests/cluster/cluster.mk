# Local test cluster verbs; included by the top-level Makefile (`include tests/cluster/cluster.mk`).
# Standalone: make -f tests/cluster/cluster.mk cluster-up
# Paths are relative to this file, so it works from any including Makefile.
CLUSTER_DIR_MK := $(dir $(lastword $(MAKEFILE_LIST)))

.PHONY: cluster-build cluster-up cluster-down cluster-status cluster-node-up cluster-node-down

## cluster-build: build or reuse etcd, kube-*, kubectl, kwok, helm in ~/.cache/tractor/k8s/
cluster-build:
	$(CLUSTER_DIR_MK)build.sh

## cluster-up: start etcd, apiserver, KCM, scheduler, KWOK (KWOK_NODES=3) and Prometheus; prints export KUBECONFIG=...
cluster-up:
	$(CLUSTER_DIR_MK)cluster.sh up

## cluster-down: stop every cluster process by PID and drop its data
cluster-down:
	$(CLUSTER_DIR_MK)cluster.sh down

## cluster-status: show each component, its PID and health
cluster-status:
	$(CLUSTER_DIR_MK)cluster.sh status

## cluster-node-up: add the real node (containerd, kubelet, kube-proxy; tainted tractor.dev/real-node) to the running cluster
cluster-node-up:
	$(CLUSTER_DIR_MK)cluster.sh node-up

## cluster-node-down: stop the real node, its containers and mounts
cluster-node-down:
	$(CLUSTER_DIR_MK)cluster.sh node-down
