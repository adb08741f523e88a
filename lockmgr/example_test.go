package lockmgr_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"scanlockfs/lockmgr"
)

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

// TryAcquire never waits: a writer finds the scan busy while a reader
// holds it.
func ExampleManager_TryAcquire() {
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
	root, err := os.MkdirTemp("", "scans")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	m, err := lockmgr.New(root, lockmgr.WithTimeout(time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

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
	_, err = m.Acquire(context.Background(), "s", lockmgr.Exclusive, b)
	fmt.Println("b's upgrade:", errors.Is(err, lockmgr.ErrDeadlock))

	rb.Release() // b gives up its read; a's upgrade goes through
	fmt.Println("a's upgrade:", <-granted)
	ra.Release()
	// Output:
	// b's upgrade: true
	// a's upgrade: <nil>
}
