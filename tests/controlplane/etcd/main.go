// Command etcd is upstream's etcd server, built from the pinned go.etcd.io/etcd/server/v3 module
// (etcd's own go.mod has replace directives, so `go install` of it fails).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
