package client

import (
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// TestDeclaredExceptionMatchesLibrary checks the cached look-up of declared
// exceptions against thrift.ExtractExceptionFromResult.
func TestDeclaredExceptionMatchesLibrary(t *testing.T) {
	oops := &testsvc.DivideByZero{Why: "1 / 0"}
	for _, result := range []thrift.TStruct{
		&testsvc.TestDivideResult{},
		&testsvc.TestDivideResult{Success: thrift.Int32Ptr(3)},
		&testsvc.TestDivideResult{Oops: oops},
		&testsvc.TestDivideResult{Success: thrift.Int32Ptr(3), Oops: oops},
		&testsvc.TestEchoResult{},
		&testsvc.TestBoomResult{},
		(*testsvc.TestDivideResult)(nil),
	} {
		for range 2 { // the second time from the cache
			got, want := declaredException(result), thrift.ExtractExceptionFromResult(result)
			if got != want {
				t.Errorf("%#v: got %v, the library %v", result, got, want)
			}
		}
	}
}
