package interop

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/idl/batch"
)

// frames splits framed-transport bytes into their frames.
func frames(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 4 {
			t.Fatalf("%d trailing bytes after the last frame", len(b))
		}
		n := int(binary.BigEndian.Uint32(b))
		if n > len(b)-4 {
			t.Fatalf("frame of %d bytes, %d left", n, len(b)-4)
		}
		out = append(out, b[4:4+n])
		b = b[4+n:]
	}
	return out
}

// checkZlibInsideFrames asserts the layout both sides must produce: one
// frame per message, and a single zlib stream running through the frames:
// its header (CMF 0x78: deflate, 32 KiB window) opens the first frame only.
func checkZlibInsideFrames(t *testing.T, who string, wire []byte) {
	t.Helper()
	fs := frames(t, wire)
	if len(fs) != 2 {
		t.Fatalf("%s: %d frames for 2 messages", who, len(fs))
	}
	if len(fs[0]) < 2 || fs[0][0] != 0x78 || (uint16(fs[0][0])<<8|uint16(fs[0][1]))%31 != 0 {
		t.Fatalf("%s: first frame does not open with a zlib header: % x", who, fs[0][:min(8, len(fs[0]))])
	}
	if fs[1][0] == 0x78 && (uint16(fs[1][0])<<8|uint16(fs[1][1]))%31 == 0 {
		t.Errorf("%s: second frame opens a new zlib stream; want one stream across frames", who)
	}
	// Every message ends with a sync flush: an empty stored block, 00 00 ff ff.
	for i, f := range fs {
		if !bytes.HasSuffix(f, []byte{0x00, 0x00, 0xff, 0xff}) {
			t.Errorf("%s: frame %d does not end with a zlib sync flush: ...% x", who, i, f[max(0, len(f)-6):])
		}
	}
}

func TestPythonTZlibOverTFramedMatchesGoTZlibOverTFramed(t *testing.T) {
	t.Parallel()
	need(t, needThrift)
	gen := generatedCode(t)
	ctx := context.Background()
	var err error

	// Python -> Go: two CALLs written by TZlibTransport(TFramedTransport(...)).
	out := runPython(t, "zlib_layering.py", []string{"--gen", gen, "write"}, "wrote 2 executeBatch calls")
	var pyWire []byte
	for line := range strings.Lines(out) {
		if h, ok := strings.CutPrefix(strings.TrimSpace(line), "hex="); ok {
			if pyWire, err = hex.DecodeString(h); err != nil {
				t.Fatal(err)
			}
		}
	}
	if pyWire == nil {
		t.Fatalf("zlib_layering.py write printed no hex= line:\n%s", out)
	}
	checkZlibInsideFrames(t, "Python", pyWire)

	zr, err := thrift.NewTZlibTransport(thrift.NewTFramedTransportConf(thrift.NewStreamTransportR(bytes.NewReader(pyWire)), nil), 6)
	if err != nil {
		t.Fatal(err)
	}
	in := thrift.NewTCompactProtocolConf(zr, nil)
	wantArgs := [][]byte{{0x16, 0x0e, 0x00}, {0x16, 0x10, 0x00}} // getProduct_args{id: 7}, {id: 8}: docs/SPEC.md section 4
	for i, want := range wantArgs {
		seq := int32(i + 1)
		name, typ, gotSeq, err := in.ReadMessageBegin(ctx)
		if err != nil {
			t.Fatalf("Go reading Python's message %d: %v", seq, err)
		}
		if name != "executeBatch" || typ != thrift.CALL || gotSeq != seq {
			t.Fatalf("message %d: header %q %v %d", seq, name, typ, gotSeq)
		}
		args := batch.NewBatchServiceExecuteBatchArgs()
		if err := args.Read(ctx, in); err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if err := in.ReadMessageEnd(ctx); err != nil {
			t.Fatal(err)
		}
		reqs := args.Request.Requests
		if len(reqs) != 1 || reqs[0].Method != "getProduct" || !bytes.Equal(reqs[0].Arguments, want) ||
			reqs[0].ID == nil || *reqs[0].ID != seq {
			t.Fatalf("message %d: requests %v, want getProduct with arguments % x and id %d", seq, reqs, want, seq)
		}
		if got := args.Request.AcceptCodecs; len(got) != 1 || got[0] != batch.Codec_ZLIB {
			t.Fatalf("message %d: acceptCodecs %v", seq, got)
		}
	}

	// The other layering, frames inside the zlib stream, cannot read it.
	wrong, err := thrift.NewTZlibTransport(thrift.NewStreamTransportR(bytes.NewReader(pyWire)), 6)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := thrift.NewTCompactProtocolConf(thrift.NewTFramedTransportConf(wrong, nil), nil).ReadMessageBegin(ctx); err == nil {
		t.Error("TFramedTransport over TZlibTransport read Python's bytes; the layering test proves nothing")
	}

	// Go -> Python: two REPLYs written by thrift.NewTZlibTransport over
	// thrift.NewTFramedTransport.
	var goWire bytes.Buffer
	zw, err := thrift.NewTZlibTransport(thrift.NewTFramedTransportConf(thrift.NewStreamTransportW(&goWire), nil), 6)
	if err != nil {
		t.Fatal(err)
	}
	outp := thrift.NewTCompactProtocolConf(zw, nil)
	replies := []*catalog.CatalogGetProductResult{
		{Success: &catalog.Product{ID: 7, Name: "Widget"}},
		{NotFound: &catalog.NotFound{ID: 8, Reason: "no product 8"}},
	}
	ser := thrift.NewTSerializer()
	ser.Protocol = thrift.NewTCompactProtocolConf(ser.Transport, nil)
	for i, r := range replies {
		seq := int32(i + 1)
		reply, err := ser.Write(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		res := batch.NewBatchServiceExecuteBatchResult()
		res.Success = &batch.BatchResponse{Responses: []*batch.Response{{ID: &seq, Reply: reply}}}
		if err := outp.WriteMessageBegin(ctx, "executeBatch", thrift.REPLY, seq); err != nil {
			t.Fatal(err)
		}
		if err := res.Write(ctx, outp); err != nil {
			t.Fatal(err)
		}
		if err := outp.WriteMessageEnd(ctx); err != nil {
			t.Fatal(err)
		}
		if err := outp.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	checkZlibInsideFrames(t, "Go", goWire.Bytes())
	runPython(t, "zlib_layering.py", []string{"--gen", gen, "read", hex.EncodeToString(goWire.Bytes())}, "read 2 executeBatch replies")
}
