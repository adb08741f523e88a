package testutil

import (
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// Writers and a reader at once: go test -race proves the locking.
func TestBufferConcurrent(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				_, _ = b.Write([]byte("x"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := b.String(); got != strings.Repeat("x", 400) {
		t.Fatalf("buffer holds %d bytes, want 400", len(got))
	}
}

func TestNowIsMonotonic(t *testing.T) {
	a := Now()
	b := Now()
	if a <= 0 || b < a {
		t.Fatalf("Now went %d then %d", a, b)
	}
}

// Tail keeps the end of what was written, trimmed.
func TestTailKeepsTheEnd(t *testing.T) {
	var tl Tail
	_, _ = tl.Write([]byte(strings.Repeat("a", 5000)))
	_, _ = tl.Write([]byte("the end\n"))
	if got := tl.String(); len(got) != 4095 || !strings.HasSuffix(got, "athe end") {
		t.Fatalf("tail holds %d bytes ending %q", len(got), got[len(got)-10:])
	}
}

// StartChild returns once the child is ready, and stop ends it.
func TestStartChild(t *testing.T) {
	cmd := exec.Command("sh", "-c", `echo ready; read x; exit 0`)
	stop := StartChild(t, cmd, "ready")
	if cmd.ProcessState != nil {
		t.Fatal("the child exited before stop")
	}
	stop()
	if cmd.ProcessState == nil || !cmd.ProcessState.Success() {
		t.Fatalf("after stop: %v", cmd.ProcessState)
	}
}
