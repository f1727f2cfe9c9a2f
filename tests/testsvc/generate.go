// Package testsvc is the Go code generated from testsvc.thrift, the service
// the end-to-end tests batch against.
package testsvc

//go:generate thrift --gen go:package_prefix=github.com/thriftbatch/thriftbatch/tests/,skip_remote,package=testsvc -out .. testsvc.thrift
//go:generate gofmt -w .
