// Package catalog is the Go code generated from ../catalog.thrift, the
// product catalog service of the example server.
package catalog

//go:generate thrift --gen go:package_prefix=github.com/thriftbatch/thriftbatch/example_server/,skip_remote -out .. ../catalog.thrift
//go:generate gofmt -w .
