package lockmgr_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"scanlockfs/lockmgr"
)

// The README's example of the package is the code between the "README"
// markers below, compiled and run here; TestREADMEShowsTheExample checks
// that the README shows exactly this code.

// README: begin
// writeScan rewrites a scan's files.json under the scan's exclusive lock.
// When the lock is not granted it returns before writing anything.
func writeScan(ctx context.Context, m *lockmgr.Manager, scan string, data []byte) error {
	owner := lockmgr.ProcessOwner() // or Owner{User, Key, PID, Note} per task
	lease, err := m.Acquire(ctx, scan, lockmgr.Exclusive, owner)
	switch {
	case errors.Is(err, lockmgr.ErrTimeout): // not granted in time
		return fmt.Errorf("scan %s is busy, try again later: %w", scan, err)
	case errors.Is(err, lockmgr.ErrDeadlock): // two shared holders both upgrading
		return fmt.Errorf("scan %s: release the shared lock before writing: %w", scan, err)
	case errors.Is(err, context.Canceled): // the caller gave up
		return err
	case err != nil: // ErrInvalidScanID, ErrLockFile, ErrClosed...
		return err
	}
	defer lease.Release()
	return os.WriteFile(filepath.Join(m.Root(), scan, "files.json"), data, 0o644)
}

// README: end

// The README's walk through the package: a writer, a reader that does not
// wait, a FUSE-style waiter and the status.
func Example_readme() {
	root, err := os.MkdirTemp("", "scans")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	for _, s := range []string{"myscan_001", "myscan_002"} {
		if err := os.Mkdir(filepath.Join(root, s), 0o755); err != nil {
			log.Fatal(err)
		}
	}
	logrus.SetOutput(os.Stderr) // the example's output is standard output only

	// README: begin
	m, err := lockmgr.New(root,
		lockmgr.WithTimeout(30*time.Second), // when the context has no deadline
		lockmgr.WithLogger(logrus.StandardLogger()))
	if err != nil {
		log.Fatal(err) // ErrRoot / ErrLockFile, naming the path
	}
	defer m.Close() // releases everything this manager holds
	ctx := context.Background()

	if err := writeScan(ctx, m, "myscan_001", []byte(`{"id": "myscan_001"}`)); err != nil {
		log.Fatal(err)
	}

	owner := lockmgr.ProcessOwner()
	if l, err := m.TryAcquire("myscan_001", lockmgr.Shared, owner); errors.Is(err, lockmgr.ErrWouldBlock) {
		fmt.Println("myscan_001 is busy right now")
	} else if err != nil {
		log.Fatal(err)
	} else {
		fmt.Println("myscan_001 is ours to read")
		l.Release()
	}

	// A FUSE-style caller whose context may be cancelled spuriously:
	// keep waiting 20 ms after a cancellation before giving up.
	lease, err := m.Acquire(ctx, "myscan_002", lockmgr.Shared, owner, lockmgr.CancelGrace(20*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	st, _ := m.Status("myscan_002") // holders and waiters here and in other processes
	fmt.Println(st.ScanID, st.State, "holders:", len(st.Holders))
	all, _ := m.List() // every scan with activity
	fmt.Println("scans with activity:", len(all))
	lease.Release()
	// README: end

	// Output:
	// myscan_001 is ours to read
	// myscan_002 shared holders: 1
	// scans with activity: 1
}

// TestREADMEShowsTheExample: the README's Go snippet of the lockmgr
// package is the code of writeScan and Example_readme between the
// "README" markers, so that what readers copy compiles and was run.
func TestREADMEShowsTheExample(t *testing.T) {
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	for i, part := range strings.Split(string(src), "// README: begin\n")[1:] {
		code, _, ok := strings.Cut(part, "// README: end\n")
		if !ok {
			t.Fatalf("README region %d has no end marker", i)
		}
		if i > 0 {
			want.WriteString("\n")
		}
		for _, line := range strings.SplitAfter(strings.TrimRight(code, "\t\n")+"\n", "\n") {
			if i > 0 { // the example's body: one tab less
				line = strings.TrimPrefix(line, "\t")
			}
			want.WriteString(line)
		}
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## The `lockmgr` package\n")
	if !ok {
		t.Fatal("README has no section \"The `lockmgr` package\"")
	}
	_, block, ok := strings.Cut(section, "```go\n")
	if !ok {
		t.Fatal("the README's lockmgr section has no Go block")
	}
	block, _, _ = strings.Cut(block, "```\n")
	if block != want.String() {
		t.Errorf("the README's lockmgr example differs from example_test.go; the README should show:\n%s", want.String())
	}
}

// A writer takes a scan exclusively, works on it and releases it. Status
// shows the lock while it is held and "free" afterwards.
func Example() {
	root, err := os.MkdirTemp("", "scans")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)

	m, err := lockmgr.New(root)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lease, err := m.Acquire(ctx, "myscan_001", lockmgr.Exclusive, lockmgr.ProcessOwner())
	if err != nil {
		log.Fatal(err)
	}
	st, _ := m.Status("myscan_001")
	fmt.Println(lease.ScanID(), lease.Mode(), "held:", st.State)

	// ... write ROOT/myscan_001/files.json ...

	if err := lease.Release(); err != nil {
		log.Fatal(err)
	}
	st, _ = m.Status("myscan_001")
	fmt.Println("after release:", st.State)
	// Output:
	// myscan_001 exclusive held: exclusive
	// after release: free
}

// exampleManager opens a Manager with opts on a new temporary scan root,
// as Example does; done closes it and removes the root.
func exampleManager(opts ...lockmgr.Option) (m *lockmgr.Manager, done func()) {
	root, err := os.MkdirTemp("", "scans")
	if err != nil {
		log.Fatal(err)
	}
	m, err = lockmgr.New(root, opts...)
	if err != nil {
		os.RemoveAll(root)
		log.Fatal(err)
	}
	return m, func() {
		m.Close()
		os.RemoveAll(root)
	}
}

// TryAcquire never waits: a writer finds the scan busy while a reader
// holds it.
func ExampleManager_TryAcquire() {
	m, done := exampleManager()
	defer done()

	reader := lockmgr.Owner{User: "alice", Key: "viewer"}
	writer := lockmgr.Owner{User: "bob", Key: "pipeline"}
	r, err := m.TryAcquire("myscan_001", lockmgr.Shared, reader)
	if err != nil {
		log.Fatal(err)
	}
	_, err = m.TryAcquire("myscan_001", lockmgr.Exclusive, writer)
	fmt.Println("writer busy:", errors.Is(err, lockmgr.ErrWouldBlock))

	r.Release()
	w, err := m.TryAcquire("myscan_001", lockmgr.Exclusive, writer)
	fmt.Println("writer after the reader left:", err == nil)
	w.Release()
	// Output:
	// writer busy: true
	// writer after the reader left: true
}

// An owner that holds a scan shared and is its only holder may upgrade to
// exclusive; two readers that both try would wait for each other, so the
// second gets ErrDeadlock at once.
func ExampleManager_Acquire_upgrade() {
	m, done := exampleManager(lockmgr.WithTimeout(time.Second))
	defer done()

	a := lockmgr.Owner{User: "alice", Key: "a"}
	b := lockmgr.Owner{User: "bob", Key: "b"}
	ra, _ := m.TryAcquire("s", lockmgr.Shared, a)
	rb, _ := m.TryAcquire("s", lockmgr.Shared, b)

	granted := make(chan error)
	go func() {
		w, err := m.Acquire(context.Background(), "s", lockmgr.Exclusive, a) // waits for b
		if err == nil {
			w.Release()
		}
		granted <- err
	}()
	for st, _ := m.Status("s"); len(st.Waiters) == 0; st, _ = m.Status("s") {
		time.Sleep(time.Millisecond) // until a's upgrade is queued
	}
	_, err := m.Acquire(context.Background(), "s", lockmgr.Exclusive, b)
	fmt.Println("b's upgrade:", errors.Is(err, lockmgr.ErrDeadlock))

	rb.Release() // b gives up its read; a's upgrade goes through
	fmt.Println("a's upgrade:", <-granted)
	ra.Release()
	// Output:
	// b's upgrade: true
	// a's upgrade: <nil>
}
