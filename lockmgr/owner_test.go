package lockmgr

import (
	"os"
	"strings"
	"testing"

	"scanlockfs/internal/procfs"
)

// The process owner's key carries this process's start time, so that a
// later process with the same pid is another owner.
func TestProcessOwnerKeyHasStartTime(t *testing.T) {
	st, err := procfs.ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	o := ProcessOwner()
	if want := ProcessKey(os.Getpid(), st.StartTime); o.Key != want || o.PID != os.Getpid() || o.User == "" {
		t.Errorf("ProcessOwner = %+v, want key %q", o, want)
	}
	if !strings.HasPrefix(o.Key, "pid:") || ProcessKey(os.Getpid(), st.StartTime+1) == o.Key {
		t.Errorf("key %q does not tell start times apart", o.Key)
	}
}
