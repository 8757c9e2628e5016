// The opa command with Envoy's ext_authz gRPC plugin registered, as
// opa-envoy-plugin's own release binary is: the peer of the sidecar benchmark.
package main

import (
	"os"

	"github.com/open-policy-agent/opa-envoy-plugin/plugin"
	"github.com/open-policy-agent/opa/cmd"
	"github.com/open-policy-agent/opa/v1/runtime"
)

func main() {
	runtime.RegisterPlugin(plugin.PluginName, plugin.Factory{})
	if err := cmd.RootCommand.Execute(); err != nil {
		os.Exit(1)
	}
}
