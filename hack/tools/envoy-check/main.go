// Command envoy-check validates Envoy bootstrap configurations against Envoy's
// own generated types: each file (JSON) is unmarshalled with protojson into
// envoy.config.bootstrap.v3.Bootstrap, every typed_config resolved to its
// registered extension type, and ValidateAll (protoc-gen-validate rules) run.
// It prints one line per file and exits 1 if any file fails.
//
// Usage: envoy-check FILE...
package main

import (
	"fmt"
	"os"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"

	// Every extension a Portcullis bootstrap names, so Any fields resolve.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/dynamic_forward_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/common/dynamic_forward_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_forward_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

func check(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var bootstrap bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(raw, &bootstrap); err != nil {
		return fmt.Errorf("does not unmarshal into envoy.config.bootstrap.v3.Bootstrap: %w", err)
	}
	if err := bootstrap.ValidateAll(); err != nil {
		return fmt.Errorf("fails Envoy's validation rules: %w", err)
	}
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: envoy-check FILE...")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		if err := check(path); err != nil {
			fmt.Printf("FAIL %s: %v\n", path, err)
			failed = true
			continue
		}
		fmt.Printf("ok %s\n", path)
	}
	if failed {
		os.Exit(1)
	}
}
