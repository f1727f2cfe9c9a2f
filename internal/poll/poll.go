// Package poll lets a test wait, for a bounded time, for a condition that
// other goroutines make true and that no channel announces: a pool's
// statistics, a goroutine count, a log that grows.
package poll

import "time"

// Until calls cond until it returns true or bound has passed, sleeping a
// millisecond between calls, and reports whether cond returned true. cond
// is called at least once.
func Until(bound time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}
