package tests

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// Benchmarks of the mount against SOURCE itself, for the README's
// figures (ratios of one run; never asserted):
//
//	go test -run '^$' -bench . -benchtime 2s ./tests/
//
// The client is this process, the server the scanlockfs process.

// BenchmarkOpenClose opens and closes one file: on SOURCE, through the
// mount in a scan (FUSE round trips plus a shared lock and release), and
// through the mount for a root file (FUSE round trips only).
func BenchmarkOpenClose(b *testing.B) {
	src := scanDB(b, "scanA")
	d := mountT(b, src)
	for _, c := range []struct{ name, path string }{
		{"source", filepath.Join(src, "scanA/files.json")},
		{"mount-scan-file", d.path("scanA/files.json")},
		{"mount-root-file", d.path("users.json")},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				f, err := os.Open(c.path)
				if err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
	}
	b.Run("mount-scan-file-write", func(b *testing.B) {
		for b.Loop() {
			f, err := os.OpenFile(d.path("scanA/files.json"), os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
}

// BenchmarkSequentialRead reads a 256 MiB file with 1 MiB reads, on
// SOURCE and through the mount (passthrough, and through the daemon).
// The file is in the page cache after the first pass in every case.
func BenchmarkSequentialRead(b *testing.B) {
	const size = 256 << 20
	src := scanDB(b, "scanA")
	f, err := os.Create(filepath.Join(src, "scanA/big"))
	must(b, err)
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for range size / len(buf) {
		_, err := f.Write(buf)
		must(b, err)
	}
	must(b, f.Close())
	d := mountT(b, src)
	dn := mountT(b, src, "--no-passthrough")
	for _, c := range []struct{ name, path string }{
		{"source", filepath.Join(src, "scanA/big")},
		{"mount-passthrough", d.path("scanA/big")},
		{"mount-no-passthrough", dn.path("scanA/big")},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				f, err := os.Open(c.path)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.CopyBuffer(io.Discard, onlyReader{f}, buf)
				f.Close()
				if err != nil || n != size {
					b.Fatalf("read %d bytes: %v", n, err)
				}
			}
		})
	}
}

// onlyReader hides *os.File's WriterTo, so that every byte goes through
// read(2) with our buffer size.
type onlyReader struct{ io.Reader }
