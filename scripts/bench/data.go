package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// Names of the scans (first path component under SOURCE) each workload
// uses. Every workload has its own scans so that none waits on another's
// leftovers.
func openScan(i int) string { return fmt.Sprintf("open_%03d", i) }
func openFile(scan, j int) string {
	return filepath.Join(openScan(scan), "images", fmt.Sprintf("img_%05d.bin", j))
}
func statScan(t string, k int) string { return fmt.Sprintf("stat_%s_%d", t, k) }
func createScan(t string) string      { return "create_" + t }

const (
	readdirScan = "readdir"
	seqScan     = "seq"
	treeScan    = "tree"
	wakeScan    = "wake"
)

func parScan(i int) string { return fmt.Sprintf("par_%d", i) }

// filesPerScan spreads n files over scans as evenly as possible.
func filesPerScan(n, scans, scan int) int {
	k := n / scans
	if scan < n%scans {
		k++
	}
	return k
}

// createData writes the data of the selected workloads under SOURCE,
// natively.
func (b *bench) createData() error {
	block := make([]byte, 4096)
	for i := range block {
		block[i] = byte(i * 7)
	}
	makers := []struct {
		workload int
		make     func() error
	}{
		{1, func() error { return b.createOpenData(block) }},
		{2, b.createStatData},
		{3, b.createCreateData},
		{4, func() error {
			if err := os.MkdirAll(filepath.Join(b.src, seqScan), 0o755); err != nil {
				return err
			}
			return writeBigFile(filepath.Join(b.src, seqScan, "data.bin"), int64(b.cfg.SeqSize))
		}},
		{5, func() error {
			return makeTree(filepath.Join(b.src, treeScan), b.cfg.TreeFiles, int(b.cfg.TreeFileSize))
		}},
		{6, b.createParData},
		{8, func() error { return b.createWakeData(block) }},
	}
	for _, m := range makers {
		if !b.sel[m.workload] {
			continue
		}
		if err := m.make(); err != nil {
			return err
		}
	}
	return nil
}

// writeFiles writes data to n files in dir (made if missing), named by
// name(j).
func writeFiles(dir string, n int, name func(j int) string, data []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for j := 0; j < n; j++ {
		if err := os.WriteFile(filepath.Join(dir, name(j)), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// createOpenData is workload 1's: c.Files small files spread over
// c.Scans scans.
func (b *bench) createOpenData(block []byte) error {
	c := b.cfg
	for s := 0; s < c.Scans; s++ {
		dir := filepath.Dir(filepath.Join(b.src, openFile(s, 0)))
		name := func(j int) string { return filepath.Base(openFile(s, j)) }
		if err := writeFiles(dir, filesPerScan(c.Files, c.Scans, s), name, block); err != nil {
			return err
		}
	}
	return nil
}

// createStatData is workload 2's.
func (b *bench) createStatData() error {
	c := b.cfg
	// Fresh directories for every target and repetition, so that each
	// first touch through a mount is a real first touch.
	for _, t := range fsVariants {
		for k := 0; k < c.Warmup+c.Reps; k++ {
			if err := makeEmptyFiles(filepath.Join(b.src, statScan(t, k)), "f", c.StatFiles); err != nil {
				return err
			}
		}
	}
	return makeEmptyFiles(filepath.Join(b.src, readdirScan, "list"), "e", c.ReaddirEntries)
}

// createCreateData is workload 3's: an empty directory per target and
// repetition.
func (b *bench) createCreateData() error {
	for _, t := range fsVariants {
		for k := 0; k < b.cfg.Reps; k++ {
			if err := os.MkdirAll(filepath.Join(b.src, createScan(t), fmt.Sprint("r", k)), 0o755); err != nil {
				return err
			}
		}
	}
	return nil
}

// createParData is workload 6's: four scans of c.ParFiles files.
func (b *bench) createParData() error {
	c := b.cfg
	data := make([]byte, int(c.ParFileSize))
	for i := range data {
		data[i] = byte(i)
	}
	for s := 0; s < 4; s++ {
		name := func(j int) string { return fmt.Sprintf("f%05d", j) }
		if err := writeFiles(filepath.Join(b.src, parScan(s), "images"), c.ParFiles, name, data); err != nil {
			return err
		}
	}
	return nil
}

// createWakeData is workload 8's: the writer's file and one per opener.
func (b *bench) createWakeData(block []byte) error {
	dir := filepath.Join(b.src, wakeScan)
	if err := writeFiles(dir, 1, func(int) string { return "w.bin" }, block); err != nil {
		return err
	}
	name := func(j int) string { return fmt.Sprintf("r_%03d", j) }
	return writeFiles(dir, b.cfg.WakeOpeners, name, block)
}

func makeEmptyFiles(dir, prefix string, n int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%s%05d", prefix, i)), os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		f.Close()
	}
	return nil
}

func writeBigFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*31 + i>>8)
	}
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := int64(len(buf))
		if size-off < n {
			n = size - off
		}
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// makeTree builds a scan as plantdb lays it out: files.json, metadata,
// images and task outputs.
func makeTree(root string, n, size int) error {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 13)
	}
	dirs := []string{"images", "metadata/images", "Colmap__/images", "Masks__"}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(root, "files.json"), []byte(`{"filesets": []}`), 0o644); err != nil {
		return err
	}
	for i := 1; i < n; i++ {
		d := dirs[i%len(dirs)]
		if err := os.WriteFile(filepath.Join(root, d, fmt.Sprintf("%05d.bin", i)), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
