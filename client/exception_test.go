package client

import (
	"context"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// twoExceptions is a result struct of a method that declares two
// exceptions, shaped as the compiler generates one, with a field that is
// not an exception between them and one of interface type.
type twoExceptions struct {
	Success *int32
	First   *testsvc.DivideByZero
	Note    *string
	Second  *batch.BatchError
	Any     thrift.TException
}

func (*twoExceptions) Read(context.Context, thrift.TProtocol) error  { return nil }
func (*twoExceptions) Write(context.Context, thrift.TProtocol) error { return nil }

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
		&twoExceptions{},
		&twoExceptions{Note: thrift.StringPtr("n")},
		&twoExceptions{Second: &batch.BatchError{Message: "second"}},
		&twoExceptions{First: oops, Second: &batch.BatchError{Message: "second"}},
		&twoExceptions{Success: thrift.Int32Ptr(1), Any: oops},
		&twoExceptions{Any: thrift.NewTApplicationException(1, "not declared")},
	} {
		for range 2 { // the second time from the cache
			got, want := declaredException(result), thrift.ExtractExceptionFromResult(result)
			if got != want {
				t.Errorf("%#v: got %v, the library %v", result, got, want)
			}
		}
	}
}
