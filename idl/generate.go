// Package idl holds the thriftbatch wire contract, batch.thrift, and the Go
// code the standard Thrift compiler generates from it (package batch).
//
// Regenerate with `go generate ./idl` after editing batch.thrift; it needs the
// thrift compiler (0.17.0 from Debian's thrift-compiler package is what the
// committed code was made with).
package idl

//go:generate thrift --gen go:package_prefix=github.com/thriftbatch/thriftbatch/idl/,skip_remote -out . batch.thrift
//go:generate gofmt -w batch
