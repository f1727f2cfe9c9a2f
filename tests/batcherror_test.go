package tests

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// refusal sends r, which must be refused with code and a message holding
// every string of contains; checks that no call ran (the batch carries a
// note call whose text the handler would record) unless ran says one does;
// and then checks that the same connection still runs a normal batch.
func refusal(t *testing.T, c *conn, h *handler, r *batch.BatchRequest, code batch.BatchErrorCode, ran bool, contains ...string) {
	t.Helper()
	before, _, _ := h.snapshot()
	msg := c.refused(t, r, code)
	for _, s := range contains {
		if !strings.Contains(msg, s) {
			t.Errorf("BatchError message %q does not contain %q", msg, s)
		}
	}
	after, _, _ := h.snapshot()
	switch {
	case ran && len(after) == len(before):
		t.Errorf("the batch's note call did not run")
	case !ran && len(after) != len(before):
		t.Errorf("calls ran although the batch was refused: notes %q", after[len(before):])
	}
	c.checkNormalBatch(t)
}

// noteReq is a call the handler records, to tell whether a batch ran.
func (c *conn) noteReq(t testing.TB, text string) *batch.Request {
	return c.req(t, "note", &testsvc.TestNoteArgs{Text: text})
}

func TestBatchErrors(t *testing.T) {
	// Payloads of 8 MiB of zeros, compressed with each codec: a few
	// hundred bytes to a few hundred KiB that expand far beyond 1 MiB.
	// They are refused before anything is decoded, so any protocol fits.
	bombs := map[batch.Codec][]byte{}
	{
		codecs := clientCodecs(t)
		zeros := make([]byte, 8<<20)
		for _, codec := range allCodecs {
			b, err := codecs.Encode(codec, nil, zeros)
			if err != nil {
				t.Fatal(err)
			}
			bombs[codec] = b
		}
	}

	for _, st := range plainStacks {
		t.Run("over "+st.name, func(t *testing.T) {
			codecs := clientCodecs(t)

			t.Run("more calls than WithMaxCalls answer TOO_MANY_CALLS", func(t *testing.T) {
				h := &handler{}
				logs := &syncBuffer{}
				addr, _ := serve(t, testsvc.NewTestProcessor(h), st, processor.WithMaxCalls(3), processor.WithLogger(zerolog.New(logs)))
				c := dial(t, addr, st)
				reqs := []*batch.Request{c.noteReq(t, "a"), c.noteReq(t, "b"), c.noteReq(t, "c"), c.noteReq(t, "d")}
				refusal(t, c, h, &batch.BatchRequest{Requests: reqs}, batch.BatchErrorCode_TOO_MANY_CALLS, false, "4 calls", "limit is 3")

				// The refusal is logged at warn level.
				lines := logs.find(t, "thriftbatch: batch refused")
				if len(lines) != 1 || lines[0]["level"] != "warn" || lines[0]["code"] != "TOO_MANY_CALLS" {
					t.Errorf("refusal log lines: %v", lines)
				}

				// The limit counts the calls inside compressedRequests too.
				packed := c.compressRequests(t, codecs, batch.Codec_S2, reqs)
				refusal(t, c, h, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec_S2), CompressedRequests: packed},
					batch.BatchErrorCode_TOO_MANY_CALLS, false, "4 calls", "limit is 3")

				// Exactly the limit is fine. The calls run concurrently, in
				// any order.
				out := c.run(t, reqs[:3]...)
				notes, _, _ := h.snapshot()
				slices.Sort(notes)
				if len(out) != 3 || strings.Join(notes, "") != "abc" {
					t.Errorf("batch of 3 calls ran notes %q", notes)
				}
			})

			t.Run("more bytes than WithMaxRequestBytes answer TOO_MANY_BYTES", func(t *testing.T) {
				h := &handler{}
				addr, _ := serve(t, testsvc.NewTestProcessor(h), st, processor.WithMaxRequestBytes(200))
				c := dial(t, addr, st)

				note := c.noteReq(t, "n")
				echo := c.req(t, "echo", &testsvc.TestEchoArgs{Text: strings.Repeat("a", 300)})
				size := len(note.Method) + len(note.Arguments) + len(echo.Method) + len(echo.Arguments)
				refusal(t, c, h, &batch.BatchRequest{Requests: []*batch.Request{note, echo}},
					batch.BatchErrorCode_TOO_MANY_BYTES, false, fmt.Sprintf("carries %d bytes", size), "limit is 200")

				// Counted after decompression: a small payload holding
				// large arguments is refused too.
				packed := c.compressRequests(t, codecs, batch.Codec_ZSTD, []*batch.Request{note, echo})
				if len(packed) >= 200 {
					t.Fatalf("test payload compressed to %d bytes, want under 200", len(packed))
				}
				refusal(t, c, h, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec_ZSTD), CompressedRequests: packed},
					batch.BatchErrorCode_TOO_MANY_BYTES, false, fmt.Sprintf("carries %d bytes", size), "limit is 200")

				// compressedRequests itself larger than the limit.
				noise := make([]byte, 400)
				rng := rand.NewChaCha8([32]byte{1})
				rng.Read(noise)
				big := c.compressRequests(t, codecs, batch.Codec_SNAPPY, []*batch.Request{c.req(t, "echo", &testsvc.TestEchoArgs{Text: string(noise)})})
				refusal(t, c, h, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec_SNAPPY), CompressedRequests: big},
					batch.BatchErrorCode_TOO_MANY_BYTES, false, fmt.Sprintf("compressedRequests is %d bytes", len(big)), "limit is 200")
			})

			t.Run("a payload that decompresses beyond WithMaxDecompressedBytes answers TOO_MANY_BYTES", func(t *testing.T) {
				h := &handler{}
				addr, _ := serve(t, testsvc.NewTestProcessor(h), st, processor.WithMaxDecompressedBytes(1<<20))
				c := dial(t, addr, st)
				for _, codec := range allCodecs {
					t.Run(codec.String(), func(t *testing.T) {
						refusal(t, c, h, &batch.BatchRequest{RequestCodec: batch.CodecPtr(codec), CompressedRequests: bombs[codec]},
							batch.BatchErrorCode_TOO_MANY_BYTES, false, codec.String(), fmt.Sprintf("%d bytes", len(bombs[codec])), "limit of 1048576 bytes")
					})
				}
			})

			h := &handler{}
			addr, _ := serve(t, testsvc.NewTestProcessor(h), st)
			c := dial(t, addr, st)

			t.Run("an unknown requestCodec answers UNSUPPORTED_CODEC", func(t *testing.T) {
				refusal(t, c, h, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec(99)), CompressedRequests: []byte("whatever")},
					batch.BatchErrorCode_UNSUPPORTED_CODEC, false, "Codec(99)")
			})

			for _, codec := range allCodecs {
				t.Run(codec.String()+" payload that does not decompress answers CORRUPT_PAYLOAD", func(t *testing.T) {
					refusal(t, c, h, &batch.BatchRequest{RequestCodec: batch.CodecPtr(codec), CompressedRequests: []byte("\x00\x00\x00this is not compressed at all")},
						batch.BatchErrorCode_CORRUPT_PAYLOAD, false, codec.String(), "does not decompress")
				})

				t.Run(codec.String()+" payload that decompresses to something other than a BatchRequest answers CORRUPT_PAYLOAD", func(t *testing.T) {
					notBatch, err := codecs.Encode(codec, nil, bytes.Repeat([]byte{0xff}, 64))
					if err != nil {
						t.Fatal(err)
					}
					refusal(t, c, h, &batch.BatchRequest{RequestCodec: batch.CodecPtr(codec), CompressedRequests: notBatch},
						batch.BatchErrorCode_CORRUPT_PAYLOAD, false, "64 bytes", "BatchRequest")

					// A real BatchRequest cut short.
					raw := c.encode(t, &batch.BatchRequest{Requests: []*batch.Request{c.noteReq(t, "cut"), c.noteReq(t, "short")}})
					cut, err := codecs.Encode(codec, nil, raw[:len(raw)/2])
					if err != nil {
						t.Fatal(err)
					}
					refusal(t, c, h, &batch.BatchRequest{RequestCodec: batch.CodecPtr(codec), CompressedRequests: cut},
						batch.BatchErrorCode_CORRUPT_PAYLOAD, false, fmt.Sprintf("%d bytes", len(raw)/2), "BatchRequest")
				})
			}

			t.Run("a call of executeBatch inside a batch answers NESTED_BATCH", func(t *testing.T) {
				inner := &testsvc.TestEchoArgs{Text: "x"} // the arguments do not matter
				refusal(t, c, h, &batch.BatchRequest{Requests: []*batch.Request{c.noteReq(t, "n"), c.req(t, "executeBatch", inner)}},
					batch.BatchErrorCode_NESTED_BATCH, false, "request 1", "executeBatch")
				refusal(t, c, h, &batch.BatchRequest{Requests: []*batch.Request{c.req(t, "Batch:executeBatch", inner), c.noteReq(t, "n")}},
					batch.BatchErrorCode_NESTED_BATCH, false, "request 0", "Batch:executeBatch")
			})

			t.Run("contradicting fields answer INVALID_REQUEST", func(t *testing.T) {
				packed := c.compressRequests(t, codecs, batch.Codec_ZSTD, []*batch.Request{c.noteReq(t, "packed")})
				refusal(t, c, h, &batch.BatchRequest{
					Requests:           []*batch.Request{c.noteReq(t, "plain")},
					RequestCodec:       batch.CodecPtr(batch.Codec_ZSTD),
					CompressedRequests: packed,
				}, batch.BatchErrorCode_INVALID_REQUEST, false, "both", "1 calls")
				refusal(t, c, h, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec_NONE), CompressedRequests: packed},
					batch.BatchErrorCode_INVALID_REQUEST, false, "NONE")
				refusal(t, c, h, &batch.BatchRequest{CompressedRequests: packed},
					batch.BatchErrorCode_INVALID_REQUEST, false, "NONE")
				refusal(t, c, h, &batch.BatchRequest{Requests: []*batch.Request{c.noteReq(t, "n")}, TimeoutMillis: thrift.Int32Ptr(-5)},
					batch.BatchErrorCode_INVALID_REQUEST, false, "timeoutMillis is -5")
			})

			t.Run("responses beyond WithMaxResponseBytes answer RESPONSE_TOO_LARGE after the calls ran", func(t *testing.T) {
				h := &handler{}
				addr, _ := serve(t, testsvc.NewTestProcessor(h), st, processor.WithMaxResponseBytes(2000))
				c := dial(t, addr, st)
				refusal(t, c, h, &batch.BatchRequest{Requests: []*batch.Request{c.noteReq(t, "ran"), c.req(t, "items", &testsvc.TestItemsArgs{Count: 200})}},
					batch.BatchErrorCode_RESPONSE_TOO_LARGE, true, "2 calls", "limit is 2000")
				refusal(t, c, h, &batch.BatchRequest{
					Requests:     []*batch.Request{c.noteReq(t, "ran"), c.req(t, "items", &testsvc.TestItemsArgs{Count: 5000})},
					AcceptCodecs: []batch.Codec{batch.Codec_ZSTD},
				}, batch.BatchErrorCode_RESPONSE_TOO_LARGE, true, "2 calls", "compressed with ZSTD", "limit is 2000")

				// Error messages count at their encoded size: a method name
				// of 500 '<' comes back in UNKNOWN_METHOD's message, which
				// the JSON protocol writes as 3,000 bytes of \u003c.
				resp, err := c.execute(t, &batch.BatchRequest{Requests: []*batch.Request{{Method: strings.Repeat("<", 500)}, c.noteReq(t, "ran")}})
				if err != nil {
					if code := err.(*batch.BatchError).Code; code != batch.BatchErrorCode_RESPONSE_TOO_LARGE {
						t.Errorf("refused with %v, want RESPONSE_TOO_LARGE or an answer within the limit", code)
					}
				} else if raw := c.encode(t, resp); len(raw) > 2000 {
					t.Errorf("the server answered %d bytes of responses, over its limit of 2000", len(raw))
				}
				c.checkNormalBatch(t)

				// Compression can bring a large answer under the limit.
				resp, err = c.execute(t, &batch.BatchRequest{Requests: c.itemsBatch(t, 50), AcceptCodecs: []batch.Codec{batch.Codec_ZSTD}})
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				c.checkItemsBatch(t, c.decompressResponses(t, codecs, batch.Codec_ZSTD, resp), 50)
			})
		})
	}
}
