# A real node for tests/support/node.py (the chart's pods as real containers): containerd v2.4.2
# (its daemon, the runc shim and ctr, from the Go module proxy; scripts/setup.d/containerd/),
# CoreDNS v1.14.7 with only the plugins the node uses (scripts/setup.d/coredns/), a pause
# image's program (scripts/setup.d/pause/pause.c), and from Debian runc, the CNI plugins
# and iptables. The kubelet and kube-proxy come with 30-kube.sh's multi-call binary.
# Sourced by scripts/setup.sh after 30-kube.sh (kube_build). About 3 minutes the first time.
for pkg in runc containernetworking-plugins iptables; do
  if ! dpkg -s "$pkg" >/dev/null 2>&1; then
    say "installing $pkg (the test node's containers)"
    apt_install "$pkg"
  fi
done
for cmd in containerd containerd-shim-runc-v2 ctr; do
  kube_build "$cmd" containerd "github.com/containerd/containerd/v2/cmd/$cmd" \
    "containerd v2.4.2 $cmd; ~2 min the first time" "" "-tags=no_btrfs,no_devmapper,no_zfs" 0
done
kube_build coredns coredns . "CoreDNS v1.14.7 (bind, health, ready, errors, log, cache, kubernetes)" "" "" 0
pause_stamp="$TOOLS/.pause-$(sha256sum scripts/setup.d/pause/pause.c | cut -c1-16)"
if [ ! -x "$TOOLS/bin/pause" ] || [ ! -f "$pause_stamp" ]; then
  if ! command -v gcc >/dev/null; then apt_install gcc libc6-dev; fi
  gcc -static -O2 -o "$TOOLS/bin/pause" scripts/setup.d/pause/pause.c
  rm -f "$TOOLS/.pause-"*
  touch "$pause_stamp"
fi
