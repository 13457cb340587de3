# pss-check: the Pod Security Standards checks of kube-apiserver's admission controller
# (k8s.io/pod-security-admission v0.37.2, pinned with go.sum) as a small command, built
# from scripts/setup.d/pss-check/ with the Go module proxy. tests/chart/test_chart.py runs it
# on every rendered pod template. Sourced by scripts/setup.sh (go_tool). Idempotent.
go_tool pss-check "k8s.io/pod-security-admission v0.37.2"
