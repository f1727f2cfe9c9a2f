package drain_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test ends the goroutines it starts: a Close left waiting, an Exit
// still running onDrain.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
