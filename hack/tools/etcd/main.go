// Command etcd is etcd's own server entry point, built through the Go module
// proxy (etcd's modules carry replace directives, so `go install` refuses them).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
