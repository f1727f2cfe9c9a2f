// Package seedcorpus keeps the seed files of the fuzz targets, under
// testdata/fuzz, in step with the seeds their tests build, so that go test
// runs every seed as a regular test and a stale file is noticed.
package seedcorpus

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update-seeds", false, "rewrite the seed corpus of the fuzz targets in testdata/fuzz")

// Check fails t unless testdata/fuzz/<target>/seed-<name> holds want; with
// -update-seeds it writes want there instead. Files the fuzzer added
// (crashers) are not touched.
func Check(t testing.TB, target, name string, want []byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	path := filepath.Join(dir, "seed-"+name)
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s is missing or stale (%v); run go test -run TestFuzzSeedCorpus -update-seeds", path, err)
	}
}
