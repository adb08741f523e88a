package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Names created, removed and renamed on SOURCE, and modes changed there,
// by writers outside the mount reach the kernel through change
// notification (fusefs/notify.go), whatever it cached: with entry,
// attribute and negative timeouts of an hour, which the test never
// waits for, `stat`, `cat` and `ls` through the mount still come to
// show SOURCE as it is. (README, "Coherence": names within 100 ms; the
// test only waits, with a generous limit, and asserts no time.)

// notifyObserve prints, for each path under the root $1, its mode, size
// and content or "missing". Run on SOURCE it gives the truth; run on the
// mount, what programs see. It lists no directory: READDIRPLUS would
// give the kernel the names anew, and the test would not show that they
// were passed on.
const notifyObserve = `
cd "$1" || exit 1
for f in S/d/new S/d/old S/d/from S/d/to S/d/mode S/d/sub/inner newscan/files.json; do
  if s=$(stat -c '%a %s' -- "$f" 2>/dev/null); then echo "$f $s $(cat -- "$f")"; else echo "$f missing"; fi
done
`

// notifyChange makes the changes on SOURCE: in directory $1 of scan S,
// a file created, one removed, one renamed to a new name, a mode
// changed, a directory with a file created; at the root $2, a new scan.
const notifyChange = `
import os, sys
d, root = sys.argv[1], sys.argv[2]
with open(d + "/new", "w") as f: f.write("new\n")
os.unlink(d + "/old")
os.rename(d + "/from", d + "/to")
os.chmod(d + "/mode", 0o600)
os.mkdir(d + "/sub")
with open(d + "/sub/inner", "w") as f: f.write("inner\n")
os.mkdir(root + "/newscan")
with open(root + "/newscan/files.json", "w") as f: f.write("files of newscan\n")
`

func TestNotifyNamesChangedOnSource(t *testing.T) {
	writers := append([]outsideWriter{{"plain process", func(t *testing.T, src, scan string, change func()) { change() }}},
		outsideWriters...)
	for _, timeouts := range []struct {
		name  string
		flags []string
	}{
		{"default timeouts", nil},
		{"one-hour timeouts", []string{"--entry-timeout", "1h", "--attr-timeout", "1h", "--negative-timeout", "1h"}},
	} {
		for _, w := range writers {
			t.Run(timeouts.name+"/"+w.name, func(t *testing.T) {
				t.Parallel()
				src := scanDB(t, "S")
				dir := filepath.Join(src, "S", "d")
				must(t, os.MkdirAll(dir, 0o755))
				for _, f := range []string{"old", "from", "mode"} {
					must(t, os.WriteFile(filepath.Join(dir, f), []byte(f+"\n"), 0o644))
				}
				d := mountT(t, src, timeouts.flags...)

				// The kernel caches every name (or its absence) and the
				// attributes.
				if got, want := run(t, "sh", "-c", notifyObserve, "sh", d.mnt), run(t, "sh", "-c", notifyObserve, "sh", src); got != want {
					t.Fatalf("before the change, the mount shows\n%s\nSOURCE\n%s", got, want)
				}
				w.change(t, src, "S", "python3", "-c", notifyChange, dir, src)
				want := run(t, "sh", "-c", notifyObserve, "sh", src)
				got := waitSeen(t, d.mnt, want)
				if got != want {
					t.Fatalf("after changes on SOURCE by %s the mount still shows, after %v,\n%s\nSOURCE\n%s", w.name, waitLimit, got, want)
				}
				if got, want := run(t, "ls", d.path("S/d")), run(t, "ls", dir); got != want {
					t.Errorf("ls through the mount shows\n%s\nSOURCE\n%s", got, want)
				}
				if n := metricValue(t, d.metrics(t), "scanlockfs_notify_invalidations_total"); n < 1 {
					t.Errorf("%v notifications to the kernel, want 1 or more", n)
				}
			})
		}
	}
}

// waitSeen runs notifyObserve on the mount until it prints want, for
// waitLimit at most, and returns its last output.
func waitSeen(t *testing.T, mnt, want string) string {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		got := run(t, "sh", "-c", notifyObserve, "sh", mnt)
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The mount's own changes come back from inotify too (every create,
// rename, unlink, chmod and utimes below), and the kernel already has
// them right: the daemon reads each event and tells the kernel nothing,
// and the mount shows SOURCE as it is afterwards. A notification here
// would drop, or worse contradict, an entry or attributes the kernel was
// just given.
func TestNotifyOwnChangesTellTheKernelNothing(t *testing.T) {
	src := scanDB(t, "A")
	dir := filepath.Join(src, "A", "images")
	must(t, os.MkdirAll(dir, 0o755))
	for i := range 100 {
		must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("img_%03d.jpg", i)), []byte("jpeg\n"), 0o644))
	}
	d := mountT(t, src)
	run(t, "cp", "-r", d.path("A"), d.path("B"))
	run(t, "sh", "-c", `cd "$1" && for f in img_0*.jpg; do mv "$f" "moved_$f"; done && rm moved_img_002.jpg && chmod 600 moved_img_001.jpg && touch -d @1000000000 moved_img_003.jpg && mkdir sub && echo x > sub/new`, "sh", d.path("B/images"))
	run(t, "rm", "-r", d.path("A/images"))

	lsR := `cd "$1" && ls -lR --time-style=+ .`
	if got, want := run(t, "sh", "-c", lsR, "sh", d.path("B")), run(t, "sh", "-c", lsR, "sh", filepath.Join(src, "B")); got != want {
		t.Errorf("after its own changes the mount shows\n%s\nSOURCE\n%s", got, want)
	}
	if _, err := os.Stat(d.path("A/images")); !os.IsNotExist(err) {
		t.Errorf("A/images removed through the mount: stat says %v", err)
	}
	m := d.metrics(t)
	if n := metricValue(t, m, "scanlockfs_notify_events_total"); n < 300 {
		t.Errorf("%v inotify events read, want at least the 300 of the creates, renames and unlinks", n)
	}
	if n := metricValue(t, m, "scanlockfs_notify_invalidations_total"); n != 0 {
		t.Errorf("%v notifications to the kernel for the mount's own changes, want 0", n)
	}
}
