// Package bombs builds hostile compressed payloads for tests: small inputs
// that claim or expand to far more than a server should decode. Each is
// built by hand, byte by byte, so it costs memory in proportion to its own
// size, not to what it expands to.
package bombs

import (
	"encoding/binary"
	"hash/crc32"
)

// Zstd returns a zstd frame of n zero bytes as RLE blocks of up to 128
// KiB: 4 bytes per block. declare writes the content size in the header;
// single makes the frame single-segment (its window is the content size);
// otherwise the window is 128 KiB.
func Zstd(n int, declare, single bool) []byte {
	var fhd byte
	if declare {
		fhd |= 3 << 6 // 8-byte Frame_Content_Size
	}
	if single {
		fhd |= 1 << 5
	}
	out := binary.LittleEndian.AppendUint32(nil, 0xFD2FB528)
	out = append(out, fhd)
	if !single {
		out = append(out, 7<<3) // Window_Descriptor: 2^(10+7) = 128 KiB
	}
	if declare {
		out = binary.LittleEndian.AppendUint64(out, uint64(n))
	}
	const block = 128 << 10
	for left := n; left > 0; {
		size := min(left, block)
		left -= size
		hdr := uint32(size)<<3 | 1<<1 // Block_Type RLE
		if left == 0 {
			hdr |= 1 // Last_Block
		}
		out = append(out, byte(hdr), byte(hdr>>8), byte(hdr>>16), 0)
	}
	return out
}

// ZstdWindow returns a zstd frame that declares a window of 2^log2 bytes (10
// to 41) and no content size, as a streaming encoder writes it, holding
// body in one raw block: a frame of 9 bytes plus the body, whatever the
// window it declares.
func ZstdWindow(log2 int, body []byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, 0xFD2FB528)
	out = append(out, 0, byte(log2-10)<<3) // no content size; Window_Descriptor
	hdr := uint32(len(body))<<3 | 1        // Block_Type raw, Last_Block
	out = append(out, byte(hdr), byte(hdr>>8), byte(hdr>>16))
	return append(out, body...)
}

// SnappyClaim is a Snappy block declaring n bytes whose body is a valid
// start (a zero literal and copies of 64 bytes) cut short: the declared
// length is all a decoder needs to refuse it.
func SnappyClaim(n int) []byte {
	out := binary.AppendUvarint(nil, uint64(n))
	out = append(out, 0, 0) // literal of one byte: 0
	for range 1000 {
		out = append(out, 63<<2|2, 1, 0) // copy of 64 bytes at offset 1
	}
	return out
}

// S2 builds a complete S2 block of n (at least 65) zero bytes: a zero
// literal, a copy of 64 bytes at offset 1, then S2's repeat codes (a copy
// with offset 0 reuses the last offset) of up to 16 MiB each.
func S2(n int) []byte {
	out := binary.AppendUvarint(nil, uint64(n))
	out = append(out, 0, 0, 63<<2|2, 1, 0)
	for left := n - 65; left > 0; {
		var l int
		switch {
		case left >= 65540:
			l = min(left, 0xffffff+65540)
			v := l - 65540
			out = append(out, 7<<2|1, 0, byte(v), byte(v>>8), byte(v>>16))
		case left >= 260:
			l = min(left, 0xffff+260)
			v := l - 260
			out = append(out, 6<<2|1, 0, byte(v), byte(v>>8))
		default:
			l = min(left, 64)
			out = append(out, byte(l-1)<<2|2, 1, 0)
		}
		left -= l
	}
	return out
}

// bitWriter writes the LSB-first bit stream of DEFLATE.
type bitWriter struct {
	out   []byte
	acc   uint64
	nbits uint
}

func (w *bitWriter) bits(v uint64, n uint) {
	w.acc |= v << w.nbits
	w.nbits += n
	for w.nbits >= 8 {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
		w.nbits -= 8
	}
}

// huff writes a Huffman code of n bits, most significant bit first.
func (w *bitWriter) huff(code uint64, n uint) {
	for i := int(n) - 1; i >= 0; i-- {
		w.bits(code>>uint(i)&1, 1)
	}
}

// Deflate builds a raw DEFLATE stream of one dynamic-Huffman block that
// inflates to 1 + 258*copies zero bytes at two bits per 258 bytes, the
// format's best ratio (about 1 MB per GiB). It returns the stream and the
// inflated length.
func Deflate(copies int) ([]byte, int) {
	w := bitWriter{out: make([]byte, 0, copies/4+64)}
	w.bits(1, 1)       // BFINAL
	w.bits(2, 2)       // BTYPE dynamic
	w.bits(286-257, 5) // HLIT: literal/length codes 0..285
	w.bits(1-1, 5)     // HDIST: one distance code
	w.bits(18-4, 4)    // HCLEN: 18 code length codes
	// Code length code lengths in the order of RFC 1951 3.2.7: symbols 18 (1
	// bit), 1 and 2 (2 bits each) are the only ones used.
	order := []int{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1}
	clen := map[int]uint64{18: 1, 2: 2, 1: 2}
	for _, sym := range order {
		w.bits(clen[sym], 3)
	}
	// Canonical codes: 18 -> 0, 1 -> 10, 2 -> 11.
	one, two := func() { w.huff(0b10, 2) }, func() { w.huff(0b11, 2) }
	zeros := func(n uint64) { w.huff(0, 1); w.bits(n-11, 7) } // symbol 18: 11..138 zeros
	// Literal/length code lengths: 0 -> 2, 256 -> 2, 285 -> 1, others unused.
	two()      // symbol 0
	zeros(138) // 1..138
	zeros(117) // 139..255
	two()      // 256 (end of block)
	zeros(28)  // 257..284
	one()      // 285 (length 258)
	one()      // distance code 0 (distance 1)
	// Canonical codes: 285 -> 0, 0 -> 10, 256 -> 11; distance 0 -> 0. A
	// copy is length 258 (0) then distance 1 (0): two zero bits, so four
	// copies make a zero byte.
	w.huff(0b10, 2) // literal 0
	for range copies % 4 {
		w.bits(0, 2)
	}
	if w.nbits == 0 {
		w.out = append(w.out, make([]byte, copies/4)...)
	} else {
		for range copies / 4 {
			w.bits(0, 8)
		}
	}
	w.huff(0b11, 2) // end of block
	if w.nbits > 0 {
		w.out = append(w.out, byte(w.acc))
	}
	return w.out, 1 + 258*copies
}

// Gzip wraps Deflate in a gzip member with a correct trailer.
func Gzip(copies int) ([]byte, int) {
	body, n := Deflate(copies)
	out := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}
	out = append(out, body...)
	zero := make([]byte, 1<<20)
	var crc uint32
	for left := n; left > 0; left -= 1 << 20 {
		crc = crc32.Update(crc, crc32.IEEETable, zero[:min(left, len(zero))])
	}
	out = binary.LittleEndian.AppendUint32(out, crc)
	return binary.LittleEndian.AppendUint32(out, uint32(n)), n
}

// Zlib wraps Deflate in a zlib stream with a correct Adler-32.
func Zlib(copies int) ([]byte, int) {
	body, n := Deflate(copies)
	out := append([]byte{0x78, 0x01}, body...)
	// Adler-32 of n zero bytes: a stays 1, b adds 1 per byte.
	return binary.BigEndian.AppendUint32(out, uint32(n%65521)<<16|1), n
}
