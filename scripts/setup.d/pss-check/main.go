// pss-check evaluates every pod template in Kubernetes YAML files against a Pod Security
// Standard level with the admission controller's own checks (k8s.io/pod-security-admission),
// as kube-apiserver would for a namespace labelled pod-security.kubernetes.io/enforce.
//
// Usage: pss-check [-level restricted] FILE...
// Prints one line per pod template, "ALLOWED kind/name" or "FORBIDDEN kind/name: reasons";
// exits 1 when any is forbidden, 2 on unreadable input.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"regexp"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

type podTemplate struct {
	name string
	meta metav1.ObjectMeta
	spec corev1.PodSpec
}

func templates(doc []byte) ([]podTemplate, error) {
	var head metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return nil, err
	}
	strict := func(into interface{}) error { return yaml.UnmarshalStrict(doc, into) }
	switch head.Kind {
	case "Pod":
		var o corev1.Pod
		if err := strict(&o); err != nil {
			return nil, err
		}
		return []podTemplate{{"Pod/" + o.Name, o.ObjectMeta, o.Spec}}, nil
	case "Deployment":
		var o appsv1.Deployment
		if err := strict(&o); err != nil {
			return nil, err
		}
		return []podTemplate{{"Deployment/" + o.Name, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec}}, nil
	case "StatefulSet":
		var o appsv1.StatefulSet
		if err := strict(&o); err != nil {
			return nil, err
		}
		return []podTemplate{{"StatefulSet/" + o.Name, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec}}, nil
	case "DaemonSet":
		var o appsv1.DaemonSet
		if err := strict(&o); err != nil {
			return nil, err
		}
		return []podTemplate{{"DaemonSet/" + o.Name, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec}}, nil
	case "Job":
		var o batchv1.Job
		if err := strict(&o); err != nil {
			return nil, err
		}
		return []podTemplate{{"Job/" + o.Name, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec}}, nil
	case "CronJob":
		var o batchv1.CronJob
		if err := strict(&o); err != nil {
			return nil, err
		}
		t := o.Spec.JobTemplate.Spec.Template
		return []podTemplate{{"CronJob/" + o.Name, t.ObjectMeta, t.Spec}}, nil
	}
	return nil, nil
}

func main() {
	level := flag.String("level", "restricted", "Pod Security Standard level: baseline or restricted")
	flag.Parse()
	lvl, err := api.ParseLevel(*level)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	lv := api.LevelVersion{Level: lvl, Version: api.LatestVersion()}
	separator := regexp.MustCompile(`(?m)^---\s*$`)
	forbidden := 0
	for _, file := range flag.Args() {
		data, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		for _, doc := range separator.Split(string(data), -1) {
			if len(bytes.TrimSpace([]byte(doc))) == 0 {
				continue
			}
			pods, err := templates([]byte(doc))
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
				os.Exit(2)
			}
			for _, pod := range pods {
				result := policy.AggregateCheckResults(evaluator.EvaluatePod(lv, &pod.meta, &pod.spec))
				if result.Allowed {
					fmt.Printf("ALLOWED %s\n", pod.name)
				} else {
					forbidden++
					fmt.Printf("FORBIDDEN %s: %s\n", pod.name, result.ForbiddenReason())
				}
			}
		}
	}
	if forbidden > 0 {
		os.Exit(1)
	}
}
