package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Unmodified programs that read and write inside one scan must finish
// without waiting on themselves: owner-aware locks let a process that
// holds the scan open more of its files, and upgrade when it is the only
// reader. The mount's timeout is short, so a self-wait would fail the
// program with EBUSY instead of passing slowly.
func TestProgramsDoNotWaitOnThemselves(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA", "scanB"), "--timeout", "3s")
	p := d.path
	steps := []struct {
		name string
		argv []string
	}{
		{"cat", []string{"cat", p("scanA/files.json")}},
		{"cp within a scan", []string{"cp", p("scanA/files.json"), p("scanA/copy.json")}},
		{"cp across scans", []string{"cp", p("scanA/files.json"), p("scanB/from_a.json")}},
		{"dd", []string{"dd", "if=" + p("scanA/files.json"), "of=" + p("scanA/dd.out"), "bs=4k", "status=none"}},
		{"dd with fsync", []string{"dd", "if=/dev/zero", "of=" + p("scanA/zeros"), "bs=64k", "count=16", "conv=fsync", "status=none"}},
		{"sed -i", []string{"sed", "-i", "s/files/FILES/", p("scanA/files.json")}},
		{"shell append", []string{"sh", "-c", "echo one >> " + p("scanA/log") + " && echo two >> " + p("scanA/log")}},
		{"shell redirect reading the same scan", []string{"sh", "-c", "cat " + p("scanA/copy.json") + " > " + p("scanA/copy2.json")}},
		{"python write and read", []string{"python3", "-c",
			"import sys\nopen(sys.argv[1], 'w').write('py\\n')\nassert open(sys.argv[1]).read() == 'py\\n'", p("scanA/py.txt")}},
		{"editor: write temp, rename over, while reading", []string{"python3", "-c", `
import os, sys
p = sys.argv[1]
with open(p) as src:              # shared lock, kept open
    text = src.read()
    with open(p + '.swp', 'w') as tmp:   # create: upgrade to exclusive
        tmp.write(text.upper())
        tmp.flush(); os.fsync(tmp.fileno())
    os.rename(p + '.swp', p)      # rename inside the scan
`, p("scanA/copy.json")}},
		{"mkdir -p, touch, chmod", []string{"sh", "-c", "mkdir -p " + p("scanA/images/raw") + " && touch " + p("scanA/images/raw/a.jpg") +
			" && chmod 600 " + p("scanA/images/raw/a.jpg")}},
		{"mv within a scan", []string{"mv", p("scanA/dd.out"), p("scanA/images/dd.out")}},
		{"rm -r", []string{"rm", "-r", p("scanA/images/raw")}},
	}
	for _, s := range steps {
		run(t, s.argv[0], s.argv[1:]...)
	}
	check := map[string]string{
		"scanA/files.json":    "FILES of scanA\n",
		"scanA/copy.json":     "FILES OF SCANA\n",
		"scanA/copy2.json":    "files of scanA\n",
		"scanB/from_a.json":   "files of scanA\n",
		"scanA/log":           "one\ntwo\n",
		"scanA/py.txt":        "py\n",
		"scanA/images/dd.out": "files of scanA\n",
	}
	for rel, want := range check {
		b, err := os.ReadFile(d.srcPath(rel))
		if err != nil || string(b) != want {
			t.Errorf("%s on SOURCE: %q, %v; want %q", rel, b, err, want)
		}
	}
	if st, err := os.Stat(d.srcPath("scanA/zeros")); err != nil || st.Size() != 16*64<<10 {
		t.Errorf("dd output: %v, %v", st, err)
	}
	if _, err := os.Stat(d.srcPath("scanA/images/raw")); !os.IsNotExist(err) {
		t.Errorf("rm -r left %v", err)
	}
	if strings.Contains(d.stderr.String(), "EBUSY") {
		t.Errorf("a program waited on itself:\n%s", d.stderr)
	}
}

// tar extracts a tree into a scan (mkdir, create, utimens, chmod in one
// process) and archives it back out.
func TestTarRoundTrip(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--timeout", "3s")
	tree := filepath.Join(t.TempDir(), "tree")
	for i, rel := range []string{"images/0.jpg", "images/1.jpg", "metadata/images.json", "files.json"} {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(tree, rel)), 0o755))
		must(t, os.WriteFile(filepath.Join(tree, rel), []byte(strings.Repeat(string(rune('a'+i)), 1000*(i+1))), 0o640))
	}
	arch := filepath.Join(t.TempDir(), "in.tar")
	run(t, "tar", "-cf", arch, "-C", tree, ".")
	run(t, "tar", "-xpf", arch, "-C", d.path("scanA"))
	out := filepath.Join(t.TempDir(), "out.tar")
	run(t, "tar", "-cf", out, "-C", d.path("scanA"), "images", "metadata", "files.json")
	list := run(t, "tar", "-tvf", out)
	for _, want := range []string{"images/0.jpg", "images/1.jpg", "metadata/images.json", "files.json", "-rw-r-----"} {
		if !strings.Contains(list, want) {
			t.Errorf("archive from the mount lacks %q:\n%s", want, list)
		}
	}
	b, err := os.ReadFile(d.srcPath("scanA/metadata/images.json"))
	if err != nil || string(b) != strings.Repeat("c", 3000) {
		t.Errorf("extracted file on SOURCE: %d bytes, %v", len(b), err)
	}
}

// Scan directories themselves: creating, renaming and removing one at the
// root works, and ls never waits for a writer.
func TestScanDirectoriesAndListing(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA", "scanB"), "--timeout", "3s")
	w := startWriter(t, d.path("scanA/files.json"))
	// Listing and stat take no lock.
	if out := run(t, "ls", "-l", d.path("scanA")); !strings.Contains(out, "files.json") {
		t.Fatalf("ls -l under a writer: %q", out)
	}
	run(t, "stat", d.path("scanA/files.json"))
	w.close("w")

	run(t, "mkdir", d.path("scanC"))
	run(t, "sh", "-c", "echo c > "+d.path("scanC/files.json"))
	run(t, "mv", d.path("scanC"), d.path("scanD"))
	if b, err := os.ReadFile(d.srcPath("scanD/files.json")); err != nil || string(b) != "c\n" {
		t.Fatalf("renamed scan: %q, %v", b, err)
	}
	run(t, "rm", "-r", d.path("scanD"))
	if _, err := os.Stat(d.srcPath("scanD")); !os.IsNotExist(err) {
		t.Fatalf("removed scan still there: %v", err)
	}
	// Renaming a scan that a writer holds waits for it.
	w.mustOpen("w", d.path("scanB/files.json"), "w")
	code, stderr, _ := runErr(t, "python3", "-c", "import os,sys; os.rename(sys.argv[1], sys.argv[2])", d.path("scanB"), d.path("scanE"))
	if code == 0 || !strings.Contains(stderr, "Device or resource busy") {
		t.Fatalf("rename of a held scan: exit %d, %s", code, stderr)
	}
	w.close("w")
}
