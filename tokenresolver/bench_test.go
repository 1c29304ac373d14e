package tokenresolver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeBenchTokens writes a websockify token file with n tokens and returns
// its path and the tokens.
func writeBenchTokens(b *testing.B, n int) (string, []string) {
	b.Helper()
	var sb strings.Builder
	sb.WriteString("# benchmark tokens\n")
	tokens := make([]string, n)
	for i := range n {
		tokens[i] = fmt.Sprintf("tok-%08x-%08x", i, i*2654435761)
		fmt.Fprintf(&sb, "%s: 10.%d.%d.%d:%d\n", tokens[i], i>>16&255, i>>8&255, i&255, 5900+i%100)
	}
	path := filepath.Join(b.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	return path, tokens
}

// BenchmarkFileResolve looks up known tokens in a 10,000-token file from
// parallel goroutines, as concurrent session opens do.
func BenchmarkFileResolve(b *testing.B) {
	path, tokens := writeBenchTokens(b, 10000)
	f, err := OpenFile(path, FileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := f.Resolve(ctx, Query{Token: tokens[i%len(tokens)]}); err != nil {
				b.Error(err)
				return
			}
			i += 7919
		}
	})
}

// BenchmarkFileResolveUnknown looks up a token that is not in the file.
func BenchmarkFileResolveUnknown(b *testing.B) {
	path, _ := writeBenchTokens(b, 10000)
	f, err := OpenFile(path, FileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	q := Query{Token: "not-a-token-in-the-file"}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := f.Resolve(ctx, q); err == nil {
			b.Fatal("unknown token resolved")
		}
	}
}

// BenchmarkOpenFile reads and parses a 10,000-token file and starts and
// stops its watcher: the cost of a config load, and about that of a reload.
func BenchmarkOpenFile(b *testing.B) {
	path, _ := writeBenchTokens(b, 10000)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		f, err := OpenFile(path, FileOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if f.Len() != 10000 {
			b.Fatalf("%d tokens, want 10000", f.Len())
		}
		f.Close()
	}
}

// BenchmarkParseTarget parses the target forms of a token file line.
func BenchmarkParseTarget(b *testing.B) {
	forms := []string{"10.0.0.1:5901", "[fd00::1]:5902", "fe80::1:5903", "unix_socket:/run/vnc/vm1.sock"}
	b.ReportAllocs()
	for i := range b.N {
		if _, err := ParseTarget(forms[i%len(forms)]); err != nil {
			b.Fatal(err)
		}
	}
}
