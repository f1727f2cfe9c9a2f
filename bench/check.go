package main

import (
	"time"

	"github.com/apache/thrift/lib/go/thrift"
)

// libraryCheck is thrift.ServerConnectivityCheckInterval as the library sets
// it (5 ms): the setting of the figures under the plain keys.
var libraryCheck = func() time.Duration {
	if d := thrift.ServerConnectivityCheckInterval; d > 0 {
		return d
	}
	return 5 * time.Millisecond
}()
