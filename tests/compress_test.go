package tests

import (
	"context"
	"slices"
	"testing"

	"github.com/thriftbatch/thriftbatch/compress"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

var allCodecs = []batch.Codec{batch.Codec_ZSTD, batch.Codec_SNAPPY, batch.Codec_S2, batch.Codec_GZIP, batch.Codec_ZLIB}

// clientCodecs returns a compress.Codecs for the client side of a test.
func clientCodecs(t testing.TB) *compress.Codecs {
	t.Helper()
	codecs, err := compress.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(codecs.Close)
	return codecs
}

// compressRequests serializes a BatchRequest holding only reqs with the
// connection's protocol and compresses it with codec, as a client does for
// compressedRequests.
func (c *conn) compressRequests(t testing.TB, codecs *compress.Codecs, codec batch.Codec, reqs []*batch.Request) []byte {
	t.Helper()
	raw := c.encode(t, &batch.BatchRequest{Requests: reqs})
	packed, err := codecs.Encode(codec, nil, raw)
	if err != nil {
		t.Fatalf("compress with %v: %v", codec, err)
	}
	return packed
}

// decompressResponses checks that resp is compressed with codec and returns
// its responses.
func (c *conn) decompressResponses(t testing.TB, codecs *compress.Codecs, codec batch.Codec, resp *batch.BatchResponse) []*batch.Response {
	t.Helper()
	if !resp.IsSetCodec() || resp.GetCodec() != codec {
		t.Fatalf("answer has codec %v (set: %v), want %v", resp.GetCodec(), resp.IsSetCodec(), codec)
	}
	if len(resp.CompressedResponses) == 0 {
		t.Fatal("codec set but compressedResponses empty")
	}
	if len(resp.Responses) != 0 {
		t.Errorf("compressed answer also carries %d plain responses", len(resp.Responses))
	}
	raw, err := codecs.Decode(codec, nil, resp.CompressedResponses)
	if err != nil {
		t.Fatalf("decompress %v responses: %v", codec, err)
	}
	if len(raw) <= len(resp.CompressedResponses) {
		t.Errorf("compressed %d bytes into %d: compression should have been skipped", len(raw), len(resp.CompressedResponses))
	}
	var inner batch.BatchResponse
	if err := wire.Decode(context.Background(), c.st.kind, raw, &inner); err != nil {
		t.Fatalf("decompressed responses do not decode as a BatchResponse: %v", err)
	}
	if inner.IsSetCodec() || inner.CompressedResponses != nil {
		t.Errorf("inner BatchResponse has codec %v / %d compressed bytes", inner.GetCodec(), len(inner.CompressedResponses))
	}
	return inner.Responses
}

// checkItemsBatch checks the answers to itemsBatch.
func (c *conn) checkItemsBatch(t testing.TB, out []*batch.Response, count int32) {
	t.Helper()
	if len(out) != 3 {
		t.Fatalf("%d responses, want 3", len(out))
	}
	var items testsvc.TestItemsResult
	c.decode(t, out[0], &items)
	if want := makeItems(count); len(items.Success) != len(want) || !slices.EqualFunc(items.Success, want, (*testsvc.Item).Equals) {
		t.Errorf("items(%d) came back with %d different items", count, len(items.Success))
	}
	if out[0].GetID() != 10 || out[1].GetID() != 11 || out[2].GetID() != 12 {
		t.Errorf("ids %d %d %d, want 10 11 12", out[0].GetID(), out[1].GetID(), out[2].GetID())
	}
	if got := c.echoed(t, out[1]); got != "next to the items" {
		t.Errorf("echo = %q", got)
	}
	wantCallError(t, out[2], 1, `"nope"`)
}

// itemsBatch is an items call of count items, an echo and an unknown method.
func (c *conn) itemsBatch(t testing.TB, count int32) []*batch.Request {
	return []*batch.Request{
		c.reqID(t, 10, "items", &testsvc.TestItemsArgs{Count: count}),
		c.reqID(t, 11, "echo", &testsvc.TestEchoArgs{Text: "next to the items"}),
		c.reqID(t, 12, "nope", &testsvc.TestEchoArgs{}),
	}
}

func TestCompression(t *testing.T) {
	for _, st := range plainStacks {
		t.Run("over "+st.name, func(t *testing.T) {
			addr, _ := serve(t, testsvc.NewTestProcessor(&handler{}), st)
			c := dial(t, addr, st)
			codecs := clientCodecs(t)

			for _, codec := range allCodecs {
				t.Run(codec.String()+" compresses requests and responses both ways", func(t *testing.T) {
					packed := c.compressRequests(t, codecs, codec, c.itemsBatch(t, 200))
					resp, err := c.execute(t, &batch.BatchRequest{
						RequestCodec:       batch.CodecPtr(codec),
						CompressedRequests: packed,
						AcceptCodecs:       []batch.Codec{codec},
					})
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					c.checkItemsBatch(t, c.decompressResponses(t, codecs, codec, resp), 200)
				})

				t.Run(codec.String()+" compressed requests may get plain responses", func(t *testing.T) {
					packed := c.compressRequests(t, codecs, codec, c.itemsBatch(t, 200))
					resp, err := c.execute(t, &batch.BatchRequest{RequestCodec: batch.CodecPtr(codec), CompressedRequests: packed})
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					if resp.GetCodec() != batch.Codec_NONE || resp.CompressedResponses != nil {
						t.Fatalf("answer compressed with %v although the client accepts no codec", resp.GetCodec())
					}
					c.checkItemsBatch(t, resp.Responses, 200)
				})

				t.Run(codec.String()+" responses come back compressed for plain requests", func(t *testing.T) {
					resp, err := c.execute(t, &batch.BatchRequest{Requests: c.itemsBatch(t, 200), AcceptCodecs: []batch.Codec{codec}})
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					c.checkItemsBatch(t, c.decompressResponses(t, codecs, codec, resp), 200)
				})

				t.Run(codec.String()+" responses below the threshold come back plain", func(t *testing.T) {
					resp, err := c.execute(t, &batch.BatchRequest{Requests: c.itemsBatch(t, 2), AcceptCodecs: []batch.Codec{codec}})
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					if resp.GetCodec() != batch.Codec_NONE || resp.CompressedResponses != nil {
						t.Fatalf("small answer compressed with %v", resp.GetCodec())
					}
					c.checkItemsBatch(t, resp.Responses, 2)
				})
			}

			t.Run("without acceptCodecs large responses come back plain", func(t *testing.T) {
				resp, err := c.execute(t, &batch.BatchRequest{Requests: c.itemsBatch(t, 200)})
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if resp.IsSetCodec() && resp.GetCodec() != batch.Codec_NONE || resp.CompressedResponses != nil {
					t.Fatalf("answer compressed with %v", resp.GetCodec())
				}
				c.checkItemsBatch(t, resp.Responses, 200)
			})

			t.Run("the server picks the first codec it knows, skipping NONE and unknown values", func(t *testing.T) {
				resp, err := c.execute(t, &batch.BatchRequest{
					Requests:     c.itemsBatch(t, 200),
					AcceptCodecs: []batch.Codec{batch.Codec_NONE, batch.Codec(99), batch.Codec_GZIP, batch.Codec_ZSTD},
				})
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				c.checkItemsBatch(t, c.decompressResponses(t, codecs, batch.Codec_GZIP, resp), 200)
			})

			t.Run("only unknown codecs accepted means plain responses", func(t *testing.T) {
				resp, err := c.execute(t, &batch.BatchRequest{Requests: c.itemsBatch(t, 200), AcceptCodecs: []batch.Codec{batch.Codec_NONE, batch.Codec(42)}})
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if resp.GetCodec() != batch.Codec_NONE || resp.CompressedResponses != nil {
					t.Fatalf("answer compressed with %v", resp.GetCodec())
				}
				c.checkItemsBatch(t, resp.Responses, 200)
			})
		})
	}
}
