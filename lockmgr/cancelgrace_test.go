package lockmgr

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A request cancelled while it waits goes on waiting for the grace: it is
// granted if the lock comes in time, and gives up with the cancellation
// otherwise.
func TestCancelGrace(t *testing.T) {
	m := newManager(t, t.TempDir())
	a, b := Owner{User: "u", Key: "a"}, Owner{User: "u", Key: "b"}
	held, err := m.Acquire(context.Background(), "s", Exclusive, a)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := acquireReleased(WithCancelGrace(ctx, 10*time.Second), m, "s", Shared, b)
	waitFor(t, "the request queued", func() bool { return m.Stats().Waiters == 1 })
	cancel()
	time.Sleep(50 * time.Millisecond) // without the grace it gives up in microseconds
	held.Release()
	if err := <-got; err != nil {
		t.Fatalf("granted within the grace: %v", err)
	}

	held, err = m.Acquire(context.Background(), "s", Exclusive, a)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	ctx, cancel = context.WithCancel(context.Background())
	start := time.Now()
	go func() {
		for m.Stats().Waiters != 1 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err = m.Acquire(WithCancelGrace(ctx, 30*time.Millisecond), "s", Shared, b)
	if !errors.Is(err, context.Canceled) || time.Since(start) < 30*time.Millisecond {
		t.Fatalf("cancelled for good: %v after %v, want context.Canceled after the grace", err, time.Since(start))
	}

	// A deadline is not a cancellation: it applies at once.
	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer dcancel()
	start = time.Now()
	_, err = m.Acquire(WithCancelGrace(dctx, 10*time.Second), "s", Shared, b)
	if !errors.Is(err, ErrTimeout) || time.Since(start) > 5*time.Second {
		t.Fatalf("deadline with a grace: %v after %v, want ErrTimeout at the deadline", err, time.Since(start))
	}
}
