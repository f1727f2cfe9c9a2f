// Package interop runs Python Thrift clients against example_server: Apache
// Thrift for Python (code from Debian's thrift compiler), ThriftPy (IDLs
// loaded at run time) and the helper library clients/python, each over the
// transports and protocols they share with the Go server.
//
// The Python side needs Debian's packages, seen by /usr/bin/python3 only:
// python3-thrift, python3-thriftpy, python3-zstandard, python3-snappy, and
// thrift-compiler for the Apache generated code. A test whose requirements
// are missing is skipped, naming the package to install; with CI=true it
// fails instead.
package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	python = "/usr/bin/python3"
	// products is how many products the server starts with: ids 1..products.
	products = 1000
	// manyCalls makes the serialized responses far larger than the server's
	// compression threshold (1024 bytes).
	manyCalls = "300"

	scriptTimeout = 90 * time.Second
	startTimeout  = 15 * time.Second
	stopTimeout   = 10 * time.Second
)

var (
	workDir string // removed by TestMain

	buildOnce sync.Once
	serverBin string
	buildErr  error

	genOnce sync.Once
	genDir  string
	genErr  error

	probes sync.Map // requirement name -> probeResult
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "thriftbatch-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		os.Exit(1)
	}
	workDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requirement is something on the machine a test needs, and the Debian
// package that provides it.
type requirement struct {
	name, pkg string
	probe     func() error
}

func pythonModule(module, pkg string) requirement {
	return requirement{"Python module " + module + " (for " + python + ")", pkg, func() error {
		cmd := exec.Command(python, "-c", "import "+module)
		cmd.Env = pythonEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, lastLine(string(out)))
		}
		return nil
	}}
}

var (
	needPython = requirement{python, "python3", func() error {
		_, err := os.Stat(python)
		return err
	}}
	needThrift    = pythonModule("thrift", "python3-thrift")
	needThriftPy  = pythonModule("thriftpy", "python3-thriftpy")
	needZstandard = pythonModule("zstandard", "python3-zstandard")
	needSnappy    = pythonModule("snappy", "python3-snappy")
	needCompiler  = requirement{"the thrift compiler", "thrift-compiler", func() error {
		_, err := exec.LookPath("thrift")
		return err
	}}
)

// need skips the test when a requirement is missing, or fails it when the
// environment variable CI is "true".
func need(t *testing.T, reqs ...requirement) {
	t.Helper()
	for _, r := range append([]requirement{needPython}, reqs...) {
		v, ok := probes.Load(r.name)
		if !ok {
			v, _ = probes.LoadOrStore(r.name, probeResult{r.probe()})
		}
		if err := v.(probeResult).err; err != nil {
			msg := fmt.Sprintf("%s is missing (%v); install it with: apt-get install %s", r.name, err, r.pkg)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg + " (CI=true: missing requirements fail the test)")
			}
			t.Skip(msg)
		}
	}
}

type probeResult struct{ err error }

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// exampleServer builds example_server once per test binary.
func exampleServer(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		serverBin = filepath.Join(workDir, "example_server")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", serverBin, "github.com/thriftbatch/thriftbatch/example_server")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build example_server: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return serverBin
}

// generatedCode runs `thrift -r --gen py` once on both IDLs and on
// testdata/interop_derived.thrift (which includes interop_base.thrift), into
// a directory that then holds the packages catalog, thriftbatch.batch,
// interop_base and interop_derived.
func generatedCode(t *testing.T) string {
	t.Helper()
	need(t, needCompiler)
	genOnce.Do(func() {
		genDir = filepath.Join(workDir, "gen-py")
		if genErr = os.MkdirAll(genDir, 0o755); genErr != nil {
			return
		}
		for _, idl := range []string{"idl/batch.thrift", "example_server/catalog.thrift", "tests/interop/testdata/interop_derived.thrift"} {
			out, err := exec.Command("thrift", "-r", "--gen", "py", "-out", genDir, filepath.Join(repoRoot(t), idl)).CombinedOutput()
			if err != nil {
				genErr = fmt.Errorf("thrift --gen py %s: %v\n%s", idl, err, out)
				return
			}
		}
	})
	if genErr != nil {
		t.Fatal(genErr)
	}
	return genDir
}

// syncBuffer collects a process's output while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer starts example_server with the given protocol and transport on
// a free loopback port, waits until it accepts connections, and stops it
// (SIGINT, then SIGKILL) when the test ends. It returns host:port.
func startServer(t *testing.T, protocol, transport string) string {
	t.Helper()
	bin := exampleServer(t)
	var lastErr error
	for range 3 { // a free port can be taken between probing and binding
		addr, err := startServerOnce(t, bin, protocol, transport)
		if err == nil {
			return addr
		}
		lastErr = err
	}
	t.Fatal(lastErr)
	return ""
}

func startServerOnce(t *testing.T, bin, protocol, transport string) (string, error) {
	t.Helper()
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	out := &syncBuffer{}
	cmd := exec.Command(bin, "-addr", addr, "-protocol", protocol, "-transport", transport,
		"-products", strconv.Itoa(products), "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = out, out
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			return err
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("example_server did not exit within %v of SIGINT; killed", stopTimeout)
		}
	}

	deadline := time.Now().Add(startTimeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case err := <-exited:
			return "", fmt.Errorf("example_server -protocol %s -transport %s on %s exited before accepting connections: %v\n%s",
				protocol, transport, addr, err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("example_server on %s did not accept connections within %v\n%s", addr, startTimeout, out.String())
		}
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			var exit *exec.ExitError
			// An interrupted server may report the signal as its exit status.
			if !errors.As(err, &exit) || exit.ExitCode() > 0 {
				t.Errorf("stopping example_server: %v\n%s", err, out.String())
			}
		}
		if t.Failed() {
			t.Logf("example_server -protocol %s -transport %s output:\n%s", protocol, transport, out.String())
		}
	})
	return addr, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// runPython runs a script of this directory with /usr/bin/python3, asserts
// that it exits 0 and that its last line of output is its PASS summary
// containing every one of want, and returns its whole output.
func runPython(t *testing.T, script string, args []string, want ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, append([]string{script}, args...)...)
	cmd.Env = pythonEnv()
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: no answer within %v\nstdout:\n%s\nstderr:\n%s", script, strings.Join(args, " "), scriptTimeout, &stdout, &stderr)
	}
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", script, strings.Join(args, " "), err, &stdout, &stderr)
	}
	line := lastLine(stdout.String())
	if !strings.HasPrefix(line, "PASS ") {
		t.Fatalf("%s %s: last line %q is not a PASS summary\nstderr:\n%s", script, strings.Join(args, " "), line, &stderr)
	}
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("%s: summary %q lacks %q", script, line, w)
		}
	}
	t.Log(line)
	return stdout.String()
}

// pythonEnv is the test's environment without the variables that would
// point /usr/bin/python3 at another interpreter's modules, and without
// bytecode caches in the repository.
func pythonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PYTHONPATH=") && !strings.HasPrefix(kv, "PYTHONHOME=") {
			env = append(env, kv)
		}
	}
	return append(env, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// plainSummary is what every script reports for its default batch: 20
// existing products, 2 missing ones, 1 unknown method and countProducts.
const plainSummary = "calls=24 codec=none products=20 notfound=2 unknown_method=1 count=1"

// manySummary is the same for a batch of 300 getProduct calls.
func manySummary(codec string) string {
	return "calls=304 codec=" + codec + " products=300 notfound=2 unknown_method=1 count=1"
}

func TestApacheThriftPythonFramedZlibCompact(t *testing.T) {
	t.Parallel()
	need(t, needThrift)
	gen := generatedCode(t)
	addr := startServer(t, "compact", "zlib")
	args := []string{addr, "--gen", gen, "--stack", "framed-zlib-compact", "--products", strconv.Itoa(products)}
	runPython(t, "apache_batch.py", args, "stack=framed-zlib-compact", plainSummary)
	// A second connection asks for zlib-compressed responses inside the zlib
	// transport: the payload is compressed twice, and still decodes.
	runPython(t, "apache_batch.py", append(args, "--calls", manyCalls, "--codec", "zlib"),
		"stack=framed-zlib-compact", manySummary("zlib"))
}

func TestApacheThriftPythonBufferedBinary(t *testing.T) {
	t.Parallel()
	need(t, needThrift)
	gen := generatedCode(t)
	addr := startServer(t, "binary", "buffered")
	args := []string{addr, "--gen", gen, "--stack", "buffered-binary", "--products", strconv.Itoa(products)}
	runPython(t, "apache_batch.py", args, "stack=buffered-binary", plainSummary)
	runPython(t, "apache_batch.py", append(args, "--calls", manyCalls, "--codec", "gzip"),
		"stack=buffered-binary", manySummary("gzip"))
}

func TestApacheThriftPythonFramedCompact(t *testing.T) {
	t.Parallel()
	need(t, needThrift)
	gen := generatedCode(t)
	addr := startServer(t, "compact", "framed")
	runPython(t, "apache_batch.py", []string{addr, "--gen", gen, "--stack", "framed-compact", "--products", strconv.Itoa(products)},
		"stack=framed-compact", plainSummary)
}

func TestApacheThriftPythonFramedJSON(t *testing.T) {
	t.Parallel()
	need(t, needThrift)
	gen := generatedCode(t)
	addr := startServer(t, "json", "framed")
	args := []string{addr, "--gen", gen, "--stack", "framed-json", "--products", strconv.Itoa(products)}
	runPython(t, "apache_batch.py", args, "stack=framed-json", plainSummary)
	runPython(t, "apache_batch.py", append(args, "--calls", manyCalls, "--codec", "zlib"),
		"stack=framed-json", manySummary("zlib"))
}

func TestThriftPyBinaryBuffered(t *testing.T) {
	t.Parallel()
	need(t, needThriftPy)
	addr := startServer(t, "binary", "buffered")
	runPython(t, "thriftpy_batch.py", []string{addr, "--transport", "buffered", "--products", strconv.Itoa(products)},
		"thriftpy transport=buffered protocol=binary", plainSummary)
}

func TestThriftPyBinaryFramed(t *testing.T) {
	t.Parallel()
	need(t, needThriftPy)
	addr := startServer(t, "binary", "framed")
	runPython(t, "thriftpy_batch.py", []string{addr, "--transport", "framed", "--products", strconv.Itoa(products)},
		"thriftpy transport=framed protocol=binary", plainSummary)
}

func TestThriftPyDecompressesEveryCodec(t *testing.T) {
	t.Parallel()
	need(t, needThriftPy, needZstandard, needSnappy)
	servers := map[string]string{
		"framed":   startServer(t, "binary", "framed"),
		"buffered": startServer(t, "binary", "buffered"),
	}
	for _, codec := range []string{"zstd", "snappy", "gzip", "zlib"} {
		for _, transport := range []string{"framed", "buffered"} {
			t.Run(codec+"/"+transport, func(t *testing.T) {
				t.Parallel()
				runPython(t, "thriftpy_batch.py", []string{servers[transport], "--transport", transport,
					"--products", strconv.Itoa(products), "--calls", manyCalls, "--codec", codec},
					"transport="+transport, manySummary(codec))
			})
		}
	}
}

func TestPythonHelperWithBothLibraries(t *testing.T) {
	t.Parallel()
	need(t, needThrift, needThriftPy, needZstandard, needSnappy)
	gen := generatedCode(t)
	n := strconv.Itoa(products)
	for _, tc := range []struct {
		name, protocol, transport string
		args                      []string
		want                      []string
	}{
		{"apache/framed-zlib-compact", "compact", "zlib",
			[]string{"--library", "apache", "--gen", gen, "--stack", "framed-zlib-compact", "--calls", manyCalls},
			[]string{"library=apache stack=framed-zlib-compact", manySummary("zstd")}},
		{"apache/framed-json", "json", "framed",
			[]string{"--library", "apache", "--gen", gen, "--stack", "framed-json", "--calls", manyCalls},
			[]string{"library=apache stack=framed-json", manySummary("zstd")}},
		{"apache/buffered-binary", "binary", "buffered",
			[]string{"--library", "apache", "--gen", gen, "--stack", "buffered-binary", "--accept", "none"},
			[]string{"library=apache stack=buffered-binary", plainSummary}},
		{"thriftpy/buffered-binary", "binary", "buffered",
			[]string{"--library", "thriftpy", "--transport", "buffered", "--calls", manyCalls},
			[]string{"library=thriftpy stack=buffered-binary", manySummary("zstd")}},
		{"thriftpy/framed-binary", "binary", "framed",
			[]string{"--library", "thriftpy", "--transport", "framed", "--accept", "none"},
			[]string{"library=thriftpy stack=framed-binary", plainSummary}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := startServer(t, tc.protocol, tc.transport)
			runPython(t, "helper_batch.py", append([]string{addr, "--products", n}, tc.args...), tc.want...)
		})
	}
}

// helperFaultChecks returns helper_faults.py's CHECKS, read from the
// script, so that a check added there runs here too.
func helperFaultChecks(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("helper_faults.py")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^CHECKS = \[(.+)\]$`).FindSubmatch(src)
	if m == nil {
		t.Fatal("helper_faults.py has no line CHECKS = [...]")
	}
	var checks []string
	for _, c := range strings.Split(string(m[1]), ",") {
		checks = append(checks, strings.Trim(strings.TrimSpace(c), `"'`))
	}
	return checks
}

// TestPythonHelperFaults runs each check of helper_faults.py: the faults the
// helper library must report precisely (codecs it cannot read, inherited
// methods, responses that do not decode, decompression bombs, corrupt
// payloads, batch and transport failures, CallError's constants, THeader).
func TestPythonHelperFaults(t *testing.T) {
	t.Parallel()
	need(t, needThrift, needThriftPy, needZstandard, needSnappy)
	gen := generatedCode(t)
	addr := startServer(t, "binary", "buffered")
	header := startServer(t, "binary", "header")
	checks := helperFaultChecks(t)
	for _, library := range []string{"apache", "thriftpy"} {
		for _, check := range checks {
			if check == "header" && library != "apache" {
				continue // ThriftPy has no THeaderProtocol
			}
			t.Run(library+"/"+check, func(t *testing.T) {
				t.Parallel()
				server := addr
				if check == "header" {
					server = header
				}
				runPython(t, "helper_faults.py", []string{server, "--library", library, "--gen", gen, "--check", check},
					"PASS helper-faults library="+library+" check="+check+" ")
			})
		}
	}
}
