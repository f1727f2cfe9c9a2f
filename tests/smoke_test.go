package tests

import (
	"testing"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

func TestSmoke(t *testing.T) {
	for _, st := range []stack{binaryBuffered, compactFramed, jsonFramed} {
		t.Run(st.name, func(t *testing.T) {
			addr, _ := serve(t, testsvc.NewTestProcessor(&handler{}), st)
			c := dial(t, addr, st)
			resp, err := c.execute(t, &batch.BatchRequest{Requests: []*batch.Request{
				c.req(t, "echo", &testsvc.TestEchoArgs{Text: "hello"}),
				c.req(t, "divide", &testsvc.TestDivideArgs{A: 1, B: 0}),
				c.req(t, "nope", &testsvc.TestEchoArgs{}),
				c.req(t, "boom", &testsvc.TestBoomArgs{}),
				c.req(t, "whereAmI", &testsvc.TestWhereAmIArgs{}),
			}})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Responses) != 5 {
				t.Fatalf("got %d responses", len(resp.Responses))
			}
			var echo testsvc.TestEchoResult
			c.decode(t, resp.Responses[0], &echo)
			if echo.GetSuccess() != "hello" {
				t.Errorf("echo = %q", echo.GetSuccess())
			}
			var div testsvc.TestDivideResult
			c.decode(t, resp.Responses[1], &div)
			if div.Oops == nil {
				t.Errorf("divide by zero: no DivideByZero: %+v", div)
			}
			t.Logf("unknown: %+v; boom: %+v", resp.Responses[2].Error, resp.Responses[3].Error)
			var where testsvc.TestWhereAmIResult
			c.decode(t, resp.Responses[4], &where)
			if where.GetSuccess() != 4 {
				t.Errorf("whereAmI = %d", where.GetSuccess())
			}
			// The same connection still serves ordinary calls.
			got, err := c.test.Echo(t.Context(), "plain")
			if err != nil || got != "plain" {
				t.Errorf("plain echo = %q, %v", got, err)
			}
		})
	}
}
