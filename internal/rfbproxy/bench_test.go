package rfbproxy

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recordedServerStreams are rfbframe's recorded real streams (QEMU and
// Xvnc answering noVNC's and TigerVNC's encodings), each as a ServerInit
// and its messages repeated to about 1 MiB.
func recordedServerStreams(b *testing.B) map[string][]byte {
	files, _ := filepath.Glob("../rfbframe/testdata/*.rfb")
	if len(files) == 0 {
		b.Fatal("no recorded streams in ../rfbframe/testdata")
	}
	streams := make(map[string][]byte)
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			b.Fatal(err)
		}
		line, stream, _ := bytes.Cut(raw, []byte("\n"))
		fields := strings.Fields(string(line))
		pf, err := hex.DecodeString(fields[len(fields)-1])
		if err != nil || len(pf) != 16 {
			b.Fatalf("%s: no pixel format in %q", file, line)
		}
		s := cat(be16(320), be16(240), pf, be32(0))
		for len(s) < 1<<20 {
			s = append(s, stream...)
		}
		streams[strings.TrimSuffix(filepath.Base(file), ".rfb")] = s
	}
	return streams
}

// BenchmarkServerFilter: what framing adds to a console with a clipboard
// policy, per byte of the server's stream, against the transparent relay's
// own work on the same reads (a 64 KiB read into the relay's buffer). It
// allocates nothing.
func BenchmarkServerFilter(b *testing.B) {
	const read = 64 << 10
	for name, stream := range recordedServerStreams(b) {
		buf := make([]byte, MaxServerCarry+read)
		b.Run(name+"/transparent", func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				for off := 0; off < len(stream); off += read {
					copy(buf, stream[off:min(off+read, len(stream))])
				}
			}
		})
		b.Run(name+"/framed", func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				f := NewServerFilter(Clipboard{NoCopy: true})
				carried := 0
				for off := 0; off < len(stream); {
					end := min(off+read, len(stream))
					n := carried + copy(buf[carried:], stream[off:end])
					off = end
					p := buf[:n]
					for len(p) > 0 {
						_, used, err := f.Filter(p)
						if err != nil {
							b.Fatal(err)
						}
						if used == 0 {
							break
						}
						p = p[used:]
					}
					carried = copy(buf, p)
				}
			}
		})
	}
}
