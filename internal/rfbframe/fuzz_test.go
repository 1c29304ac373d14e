package rfbframe

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// FuzzFramer: whatever a server sends, the framer neither panics nor
// holds more than its fixed state (it has no buffers to grow), and where
// the stream is cut does not change the messages it finds or the error it
// stops at.
func FuzzFramer(f *testing.F) {
	// Short seeds only: the fuzzer minimizes every input that finds new
	// code byte by byte, and a long one stalls it for many seconds.
	const seedLimit = 512
	for i, c := range frameCases {
		if stream := cat(c.msgs...); len(stream) <= seedLimit {
			f.Add(stream, uint64(i), uint8(pfIndex(c.format())))
		}
	}
	files, _ := filepath.Glob("testdata/*.rfb")
	for i, file := range files {
		_, _, pf, stream := readRecording(f, file)
		f.Add(stream[:min(len(stream), seedLimit)], uint64(i), uint8(pfIndex(pf)))
	}
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64, format uint8) {
		pf := fuzzFormats[int(format)%len(fuzzFormats)]
		frame := func(chunks [][]byte) ([]message, string) {
			fr, err := NewFramer(pf)
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := frameChunks(t, fr, chunks)
			return msgs, fmt.Sprint(err)
		}
		whole, wholeErr := frame([][]byte{stream})

		rnd := rand.New(rand.NewPCG(seed, 3))
		var chunks [][]byte
		for p := stream; len(p) > 0; {
			n := min(len(p), 1+rnd.IntN(1+int(seed%64)))
			chunks = append(chunks, p[:n])
			p = p[n:]
		}
		cut, cutErr := frame(chunks)
		if !slices.Equal(whole, cut) || wholeErr != cutErr {
			t.Fatalf("whole: %v, %s\nin %d chunks: %v, %s", whole, wholeErr, len(chunks), cut, cutErr)
		}
	})
}

var fuzzFormats = []rfb.PixelFormat{pf32, pf16, pf8, pfDepth32}

func pfIndex(pf rfb.PixelFormat) int {
	return max(0, slices.Index(fuzzFormats, pf))
}
