package wire_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/compress"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/seedcorpus"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// sampleBatch is a BatchRequest with every field set: the known-good input
// decoded after every fuzz input, to show that a failed decode leaves
// nothing behind in the pooled protocols.
func sampleBatch(t testing.TB, k wire.Kind) *batch.BatchRequest {
	t.Helper()
	args, err := wire.Encode(context.Background(), k, nil, &testsvc.TestEchoArgs{Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	return &batch.BatchRequest{
		Requests: []*batch.Request{
			{Method: "echo", Arguments: args, ID: thrift.Int32Ptr(1)},
			{Method: "Test:divide", Arguments: []byte{0}},
			{Method: ""},
		},
		AcceptCodecs:  []batch.Codec{batch.Codec_ZSTD, batch.Codec(99)},
		TimeoutMillis: thrift.Int32Ptr(250),
		Sequential:    thrift.BoolPtr(true),
	}
}

// FuzzDecodeBatchRequest decodes arbitrary bytes as a BatchRequest with each
// protocol kind, as they arrive in compressedRequests: plain, decompressed
// with a codec, and compressed then decompressed. Decode must not panic; what
// decodes must encode again and, for binary and compact, decode to an equal
// struct; and the known-good sample must still decode afterwards.
func FuzzDecodeBatchRequest(f *testing.F) {
	ctx := context.Background()
	codecs, err := compress.New(compress.WithMaxDecodedSize(1 << 20))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(codecs.Close)
	var samples [3][]byte
	for _, k := range kinds {
		samples[k], err = wire.Encode(ctx, k, nil, sampleBatch(f, k))
		if err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, kindB, codecB uint8, data []byte) {
		k := kinds[int(kindB)%len(kinds)]
		codec := compress.Supported[int(codecB)%len(compress.Supported)]

		plain, plainErr := decodeChecked(t, k, data)

		// As a server reads compressedRequests: decompress, then decode.
		if raw, err := codecs.Decode(codec, nil, data); err == nil {
			decodeChecked(t, k, raw)
		}

		// Compressing first changes nothing.
		if len(data) <= codecs.MaxDecodedSize() {
			packed, err := codecs.Encode(codec, nil, data)
			if err != nil {
				t.Fatalf("%v Encode: %v", codec, err)
			}
			raw, err := codecs.Decode(codec, nil, packed)
			if err != nil || !bytes.Equal(raw, data) {
				t.Fatalf("%v round trip of %d bytes: %v", codec, len(data), err)
			}
			viaCodec, viaErr := decodeChecked(t, k, raw)
			if (plainErr == nil) != (viaErr == nil) || (plainErr == nil && !plain.Equals(viaCodec)) {
				t.Fatalf("%s: plain decode (%v) and decode after %v (%v) differ", k, plainErr, codec, viaErr)
			}
		}

		var again batch.BatchRequest
		if err := wire.Decode(ctx, k, samples[k], &again); err != nil || !again.Equals(sampleBatch(t, k)) {
			t.Fatalf("%s: the sample no longer decodes after this input: %v", k, err)
		}
	})
}

// decodeChecked decodes b and, when it decodes, checks that the struct
// encodes again and that binary and compact decode that to an equal struct.
func decodeChecked(t *testing.T, k wire.Kind, b []byte) (*batch.BatchRequest, error) {
	t.Helper()
	ctx := context.Background()
	var r batch.BatchRequest
	if err := wire.Decode(ctx, k, b, &r); err != nil {
		return nil, err
	}
	enc, err := wire.Encode(ctx, k, nil, &r)
	if err != nil {
		t.Fatalf("%s: a decoded BatchRequest does not encode: %v", k, err)
	}
	var back batch.BatchRequest
	if err := wire.Decode(ctx, k, enc, &back); err != nil {
		t.Fatalf("%s: a re-encoded BatchRequest does not decode: %v\ninput %q\nre-encoded %q", k, err, b, enc)
	}
	// JSON does not round-trip every string byte for byte (invalid UTF-8),
	// so only binary and compact must give back an equal struct.
	if k != wire.JSON && !back.Equals(&r) {
		t.Fatalf("%s: round trip changed the BatchRequest:\n%+v\n%+v", k, &r, &back)
	}
	return &r, nil
}

// fuzzSeed is one entry of the seed corpus.
type fuzzSeed struct {
	name  string
	kind  wire.Kind
	codec batch.Codec // compressed seeds name their own codec
	data  []byte
}

// nestedStructs returns an unknown field 9 of depth nested structs, in the
// binary or compact encoding, inside a struct: the protocol must refuse it
// at its recursion limit.
func nestedStructs(k wire.Kind, depth int) []byte {
	var b []byte
	for range depth {
		if k == wire.Compact {
			b = append(b, 0x9c) // field delta 9, type STRUCT
		} else {
			b = append(b, byte(thrift.STRUCT), 0, 9)
		}
	}
	return append(b, bytes.Repeat([]byte{0}, depth+1)...)
}

func fuzzSeeds(t testing.TB) []fuzzSeed {
	ctx := context.Background()
	codecs, err := compress.New()
	if err != nil {
		t.Fatal(err)
	}
	defer codecs.Close()
	var out []fuzzSeed
	for _, k := range kinds {
		valid, err := wire.Encode(ctx, k, nil, sampleBatch(t, k))
		if err != nil {
			t.Fatal(err)
		}
		empty, _ := wire.Encode(ctx, k, nil, &batch.BatchRequest{})
		out = append(out,
			fuzzSeed{k.String() + "-valid", k, batch.Codec_ZSTD, valid},
			fuzzSeed{k.String() + "-empty-struct", k, batch.Codec_S2, empty},
			fuzzSeed{k.String() + "-truncated", k, batch.Codec_GZIP, valid[:len(valid)*2/3]},
			fuzzSeed{k.String() + "-nothing", k, batch.Codec_SNAPPY, nil},
		)
		for _, codec := range compress.Supported {
			packed, err := codecs.Encode(codec, nil, valid)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fuzzSeed{k.String() + "-compressed-" + strings.ToLower(codec.String()), k, codec, packed})
		}
	}
	// Lying lengths and deep nesting, binary and compact.
	out = append(out,
		fuzzSeed{"binary-list-claims-2^31-1", wire.Binary, batch.Codec_ZSTD, []byte{byte(thrift.LIST), 0, 1, byte(thrift.STRUCT), 0x7f, 0xff, 0xff, 0xff, 0}},
		fuzzSeed{"binary-arguments-claim-2GiB", wire.Binary, batch.Codec_ZSTD,
			[]byte{byte(thrift.LIST), 0, 1, byte(thrift.STRUCT), 0, 0, 0, 1, byte(thrift.STRING), 0, 2, 0x7f, 0xff, 0xff, 0xff, 'a', 0, 0}},
		fuzzSeed{"binary-method-claims-1GiB", wire.Binary, batch.Codec_ZSTD,
			[]byte{byte(thrift.LIST), 0, 1, byte(thrift.STRUCT), 0, 0, 0, 1, byte(thrift.STRING), 0, 1, 0x40, 0, 0, 0, 'e', 0, 0}},
		fuzzSeed{"binary-compressed-claims-90MB", wire.Binary, batch.Codec_ZSTD,
			binary.BigEndian.AppendUint32([]byte{byte(thrift.STRING), 0, 3}, 90_000_000)},
		fuzzSeed{"binary-nested-200", wire.Binary, batch.Codec_ZSTD, nestedStructs(wire.Binary, 200)},
		fuzzSeed{"compact-list-claims-2^31-1", wire.Compact, batch.Codec_ZSTD, []byte{0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0}},
		fuzzSeed{"compact-arguments-claim-2GiB", wire.Compact, batch.Codec_ZSTD, []byte{0x19, 0x1c, 0x28, 0xff, 0xff, 0xff, 0xff, 0x07, 'a', 0, 0}},
		fuzzSeed{"compact-nested-200", wire.Compact, batch.Codec_ZSTD, nestedStructs(wire.Compact, 200)},
		fuzzSeed{"json-list-claims-2^31-1", wire.JSON, batch.Codec_ZSTD, []byte(`{"1":{"lst":["rec",2147483647,{}]}}`)},
		fuzzSeed{"json-bad-base64", wire.JSON, batch.Codec_ZSTD, []byte(`{"1":{"lst":["rec",1,{"2":{"str":"!!!"}}]}}`)},
		fuzzSeed{"json-deep-arrays", wire.JSON, batch.Codec_ZSTD, []byte(`{"9":{"lst":["lst",1,` + strings.Repeat(`["lst",1,`, 100) + `]}}`)},
	)
	return out
}

// TestFuzzSeedCorpus checks that testdata/fuzz/FuzzDecodeBatchRequest holds
// the seeds above, which go test runs as regular tests; -update-seeds
// rewrites them. Entries the fuzzer added (crashers) are left alone.
func TestFuzzSeedCorpus(t *testing.T) {
	const target = "FuzzDecodeBatchRequest"
	for _, s := range fuzzSeeds(t) {
		codecIndex := -1
		for i, c := range compress.Supported {
			if c == s.codec {
				codecIndex = i
			}
		}
		want := []byte(fmt.Sprintf("go test fuzz v1\nbyte(%q)\nbyte(%q)\n[]byte(%q)\n", uint8(s.kind), uint8(codecIndex), s.data))
		seedcorpus.Check(t, target, s.name, want)
	}
}
