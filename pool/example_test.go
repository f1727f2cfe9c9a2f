package pool_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/thriftbatch/thriftbatch/pool"
)

// Run calls fn for every index and returns the values in index order, with a
// status per index.
func Example() {
	p, err := pool.New(pool.WithSize(8))
	if err != nil {
		panic(err)
	}
	defer p.Close(context.Background())

	words := []string{"alpha", "beta", "gamma", "delta"}
	res, err := pool.Run(context.Background(), p, len(words), 0, func(i int) string {
		if i == 2 {
			panic("a handler bug") // becomes StatusPanicked, the others go on
		}
		return strings.ToUpper(words[i])
	})
	if err != nil {
		panic(err)
	}
	for i, v := range res.Values {
		fmt.Printf("%d %v %q\n", i, res.Status(i) == pool.StatusDone, v)
	}
	// Output:
	// 0 true "ALPHA"
	// 1 true "BETA"
	// 2 false ""
	// 3 true "DELTA"
}

// When ctx ends, Run returns at once: calls still running are abandoned and
// calls not started are canceled.
func ExampleRun_deadline() {
	p, err := pool.New()
	if err != nil {
		panic(err)
	}
	defer p.Close(context.Background())

	stuck := make(chan struct{})
	defer close(stuck)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	// limit 1: call 0 is stuck, so calls 1 and 2 never start.
	res, _ := pool.Run(ctx, p, 3, 1, func(i int) int {
		<-stuck
		return i
	})
	fmt.Println(res.Status(0) == pool.StatusAbandoned, res.Status(1) == pool.StatusCanceled, res.Status(2) == pool.StatusCanceled)
	// Output: true true true
}
