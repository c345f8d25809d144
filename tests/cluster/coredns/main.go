// Command coredns is the test cluster's DNS server: CoreDNS with only the plugins cluster.sh's Corefile uses,
// so a cold build compiles the Kubernetes plugin and not CoreDNS's cloud DNS providers.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver" // registers the "dns" server type
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
