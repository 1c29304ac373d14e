package recording

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkRetentionRun is one retention run over a directory of 10,000
// ended recordings (two files each) within its limits: the periodic run,
// which looks at every file (all), and the run after a recording's end,
// which looks only at files it has not seen (known).
//
//	go test -run '^$' -bench RetentionRun ./internal/recording/
func BenchmarkRetentionRun(b *testing.B) {
	dir := b.TempDir()
	start := time.Now().Add(-time.Hour)
	for i := range 10000 {
		id := start.Add(time.Duration(i)*time.Millisecond).UTC().Format(idTimeLayout) + fmt.Sprintf("-%024x", i)
		for _, ext := range []string{".fbs", ".json"} {
			if err := os.WriteFile(filepath.Join(dir, id+ext), []byte("x"), 0o600); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, known := range []bool{false, true} {
		name := "all"
		if known {
			name = "known"
		}
		b.Run(name, func(b *testing.B) {
			r := NewRetention(dir, 24*time.Hour, 1<<40)
			if _, err := r.Run(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if deleted, err := r.run(known); err != nil || len(deleted) > 0 {
					b.Fatal(deleted, err)
				}
			}
		})
	}
}
