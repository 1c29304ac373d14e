package rfbframe

import (
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkFramer frames the recorded real streams (see real_test.go) as a
// relay does, in reads of 32 KiB, what a read leaves read again with the
// next.
func BenchmarkFramer(b *testing.B) {
	files, _ := filepath.Glob("testdata/*.rfb")
	if len(files) == 0 {
		b.Fatal("no recorded streams in testdata")
	}
	const read = 32 << 10
	for _, file := range files {
		b.Run(strings.TrimSuffix(filepath.Base(file), ".rfb"), func(b *testing.B) {
			_, _, pf, stream := readRecording(b, file)
			f, err := NewFramer(pf)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				for off := 0; off < len(stream); {
					end := min(off+read, len(stream))
					p := stream[off:end]
					for len(p) > 0 {
						s, err := f.Next(p)
						if err != nil {
							b.Fatal(err)
						}
						if s.Len == 0 {
							break
						}
						p = p[s.Len:]
					}
					off = end - len(p)
				}
				if !f.AtBoundary() {
					b.Fatal("the stream ends inside a message")
				}
			}
		})
	}
}
