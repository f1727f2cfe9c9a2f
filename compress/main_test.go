package compress_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test closes the Codecs it builds: the zstd decoder runs goroutines
// until Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
