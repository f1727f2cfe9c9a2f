package processor

import (
	"bytes"
	"testing"
	"unsafe"

	"github.com/thriftbatch/thriftbatch/idl/batch"
)

// within reports whether b lies inside frame.
func within(frame, b []byte) bool {
	if len(b) == 0 {
		return false
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(frame)))
	at := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return at >= start && at < start+uintptr(len(frame))
}

func TestDetachCopiesArgumentsOutOfALargelyUnusedFrame(t *testing.T) {
	for _, tc := range []struct {
		name     string
		frame    int // bytes in the frame
		detached bool
	}{
		{"arguments are most of the frame", 300, false},
		{"the unused rest is small", 40 << 10, false},
		{"the unused rest is over 64 KiB and most of the frame", 1 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame := bytes.Repeat([]byte{0xee}, tc.frame)
			copy(frame, "aaaabbbbbbcc")
			req := &batch.BatchRequest{
				Requests: []*batch.Request{
					{Method: "x", Arguments: frame[0:4:4]},
					{Method: "y", Arguments: frame[4:10:10]},
					{Method: "z", Arguments: frame[10:10:10]}, // empty, not nil
					{Method: "w"}, // nil
				},
				CompressedRequests: frame[10:12:12],
			}
			if tc.name == "arguments are most of the frame" {
				req.Requests[1].Arguments = frame[4:200:200]
			}
			want := [][]byte{bytes.Clone(req.Requests[0].Arguments), bytes.Clone(req.Requests[1].Arguments)}
			detach(req, len(frame))
			for i, w := range want {
				got := req.Requests[i].Arguments
				if !bytes.Equal(got, w) || cap(got) != len(got) {
					t.Errorf("request %d: arguments %q (cap %d), want %q", i, got, cap(got), w)
				}
				if within(frame, got) == tc.detached {
					t.Errorf("request %d: arguments in the frame: %v, want %v", i, within(frame, got), !tc.detached)
				}
			}
			if a := req.Requests[2].Arguments; a == nil || len(a) != 0 {
				t.Errorf("empty arguments became %#v", a)
			}
			if a := req.Requests[3].Arguments; a != nil {
				t.Errorf("nil arguments became %#v", a)
			}
			if got := req.CompressedRequests; string(got) != "cc" || within(frame, got) == tc.detached {
				t.Errorf("compressedRequests %q, in the frame: %v", got, within(frame, got))
			}
		})
	}
}
