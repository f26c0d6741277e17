// Command kube-controller-manager is the upstream kube-controller-manager, built from the pinned
// k8s.io/kubernetes module for the hepbatch testbed.
package main

import (
	"os"
	_ "time/tzdata" // time zones for CronJob, as upstream embeds them

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
