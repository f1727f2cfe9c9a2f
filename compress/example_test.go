package compress_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/thriftbatch/thriftbatch/compress"
	"github.com/thriftbatch/thriftbatch/idl/batch"
)

// A server builds one Codecs, picks the codec the client prefers among those
// it supports, and decodes with a bound on the output.
func Example() {
	codecs, err := compress.New(compress.WithMaxDecodedSize(1 << 20))
	if err != nil {
		panic(err)
	}
	defer codecs.Close()

	// The client accepts an unknown codec 9, then gzip, then zstd.
	codec := compress.Choose([]batch.Codec{9, batch.Codec_GZIP, batch.Codec_ZSTD})
	fmt.Println("chosen:", compress.Name(codec))

	payload := []byte(strings.Repeat("a serialized BatchResponse ", 1000))
	enc, err := codecs.Encode(codec, nil, payload)
	if err != nil {
		panic(err)
	}
	dec, err := codecs.Decode(codec, nil, enc)
	fmt.Println("round trip:", err == nil && string(dec) == string(payload), len(enc) < len(payload)/10)

	// 2 MiB of zeros compress to a few KiB but exceed the 1 MiB limit.
	bomb, _ := codecs.Encode(codec, nil, make([]byte, 2<<20))
	_, err = codecs.Decode(codec, nil, bomb)
	fmt.Println("too large:", errors.Is(err, compress.ErrTooLarge))

	_, err = codecs.Decode(batch.Codec_NONE, nil, enc)
	fmt.Println("unsupported:", errors.Is(err, compress.ErrUnsupportedCodec))
	// Output:
	// chosen: GZIP
	// round trip: true true
	// too large: true
	// unsupported: true
}
