package compress

import (
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// TestAZstdEncodeRacingCloseReturns: an Encode that passed the closed check
// just before Close, with every encoder made and idle, finds none left once
// Close has taken them; it must make one, not wait for one forever.
func TestAZstdEncodeRacingCloseReturns(t *testing.T) {
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	for c.zstdMade.Load() < int32(cap(c.zstdW)) {
		e, err := zstd.NewWriter(nil, c.zstdOpts...)
		if err != nil {
			t.Fatal(err)
		}
		c.zstdMade.Add(1)
		c.zstdW <- e
	}
	c.Close()
	done := make(chan error, 1)
	go func() {
		_, err := c.zstdEncode(nil, []byte("hello"))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a zstd Encode running as Close took the encoders waits for one")
	}
}
