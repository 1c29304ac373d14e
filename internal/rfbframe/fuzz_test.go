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
	for i, c := range frameCases {
		f.Add(cat(c.msgs...), uint64(i), uint8(pfIndex(c.format())))
	}
	files, _ := filepath.Glob("testdata/*.rfb")
	for i, file := range files {
		_, _, pf, stream := readRecording(f, file)
		// Beginnings only: short inputs keep the fuzzer's minimizing quick.
		f.Add(stream[:min(len(stream), 1024)], uint64(i), uint8(pfIndex(pf)))
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
