// kube is one binary for a local Kubernetes cluster: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, and for a real node the kubelet and kube-proxy,
// built from the pinned k8s.io/kubernetes
// module (and the etcd server it pins) with the Go module proxy. It dispatches on the name
// it was called by (scripts/setup.d/30-kube.sh links each name to it) or, when called as
// `kube`, on its first argument: `kube etcd --help`, `kube kube-apiserver --version`.
// One binary instead of four saves about 170 MB of disk and one link step per name.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	_ "time/tzdata" // CronJob time zones, as the upstream commands import it

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	name, args := filepath.Base(os.Args[0]), os.Args[1:]
	if name == "kube" {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, "usage: kube etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy [flags]")
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	switch name {
	case "etcd":
		etcdmain.Main(append([]string{"etcd"}, args...))
	case "kube-apiserver":
		run(apiserver.NewAPIServerCommand(), args)
	case "kube-controller-manager":
		run(controllermanager.NewControllerManagerCommand(), args)
	case "kube-scheduler":
		run(scheduler.NewSchedulerCommand(), args)
	case "kube-proxy":
		run(proxy.NewProxyCommand(), args)
	case "kubelet":
		run(kubelet.NewKubeletCommand(context.Background()), args)
	default:
		fmt.Fprintf(os.Stderr, "kube: unknown command %q\n", name)
		os.Exit(2)
	}
}

func run(cmd *cobra.Command, args []string) {
	cmd.SetArgs(args)
	os.Exit(cli.Run(cmd))
}
