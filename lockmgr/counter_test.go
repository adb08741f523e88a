package lockmgr

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
)

// The counter file holds "%010d %010d\n": the same number twice, each
// half written by its own pwrite with a yield in between. A reader or
// writer that gets in between the two writes sees two different numbers.
const counterLen = 22

func writeCounterFile(t testing.TB, path string, v int) {
	t.Helper()
	if err := os.WriteFile(path, fmt.Appendf(nil, "%010d %010d\n", v, v), 0o644); err != nil {
		t.Fatal(err)
	}
}

func parseCounter(b []byte) (int, error) {
	if len(b) != counterLen || b[10] != ' ' || b[21] != '\n' || !bytes.Equal(b[:10], b[11:21]) {
		return 0, fmt.Errorf("torn counter file %q", b)
	}
	return strconv.Atoi(string(b[:10]))
}

func readCounterFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return parseCounter(b)
}

// incrementOnce adds one to the counter under an exclusive lock.
func incrementOnce(m *Manager, scan, path string, o Owner) error {
	l, err := m.Acquire(context.Background(), scan, Exclusive, o)
	if err != nil {
		return err
	}
	defer l.Release()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 64)
	n, _ := f.ReadAt(b, 0)
	v, err := parseCounter(b[:n])
	if err != nil {
		return err
	}
	v++
	if _, err := f.WriteAt(fmt.Appendf(nil, "%010d", v), 0); err != nil {
		return err
	}
	runtime.Gosched()
	_, err = f.WriteAt(fmt.Appendf(nil, " %010d\n", v), 10)
	return err
}

// readCounter checks the counter under a shared lock.
func readCounter(m *Manager, scan, path string, o Owner) error {
	l, err := m.Acquire(context.Background(), scan, Shared, o)
	if err != nil {
		return err
	}
	defer l.Release()
	_, err = readCounterFile(path)
	return err
}

// incrementConcurrently runs g goroutines, each an owner of its own, that
// add n each to the counter.
func incrementConcurrently(m *Manager, scan, path string, n, g int, user string) error {
	var wg sync.WaitGroup
	errs := make(chan error, g)
	for i := range g {
		wg.Go(func() {
			o := Owner{User: user, Key: "writer:" + strconv.Itoa(i)}
			for range n {
				if err := incrementOnce(m, scan, path, o); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// TestNoLostUpdate: processes and goroutines increment a counter under
// exclusive locks while readers check it under shared locks. Any overlap
// of a writer with another writer loses an update; any overlap with a
// reader shows a torn file.
func TestNoLostUpdate(t *testing.T) {
	root := t.TempDir()
	counter := filepath.Join(root, "counter")
	writeCounterFile(t, counter, 0)
	const (
		writerProcs = 3
		goroutines  = 2
		perWriter   = 40
	)
	var readers []*proc
	for range 2 {
		r := startHelper(t, root, "")
		r.ok("readers c %s 2", counter)
		readers = append(readers, r)
	}
	var writers []*proc
	for range writerProcs {
		w := startHelper(t, root, "")
		w.send("increment c %s %d %d", counter, perWriter, goroutines)
		writers = append(writers, w)
	}
	m := newManager(t, root)
	if err := incrementConcurrently(m, "c", counter, perWriter, goroutines, "tester"); err != nil {
		t.Error(err)
	}
	for _, w := range writers {
		if line := w.recv(); line != "ok" {
			t.Errorf("writer %d: %s", w.pid, line)
		}
	}
	for _, r := range readers {
		f := r.ok("stop")
		if f[1] != "0" {
			t.Errorf("reader %d saw %s torn files in %s reads: %s", r.pid, f[1], f[0], f[2])
		}
		if atoi64(t, f[0]) == 0 {
			t.Errorf("reader %d never read", r.pid)
		}
	}
	got, err := readCounterFile(counter)
	if err != nil {
		t.Fatal(err)
	}
	if want := (writerProcs + 1) * goroutines * perWriter; got != want {
		t.Errorf("counter = %d, want %d: updates were lost", got, want)
	}
}
