package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// FUSE requests per operation. Both servers count every request by
// opcode with the same code (fusefs.CountRequests): scanlockfs shows the
// counts in MOUNTPOINT/.locks/metrics, the loopback answers "requests" on
// its stdin (loopback -count-requests). The counters are read before and
// after each timed part, never inside it, and what reading them costs is
// taken off:
//
//   - The loopback's answer costs no request.
//   - .locks/metrics is rendered at OPEN. The bench keeps it open and
//     opens it again through /proc/self/fd, which skips the LOOKUPs of
//     .locks and metrics (a magic link is not revalidated), so that every
//     reading costs the same few requests, whatever the kernel still
//     caches: its OPEN before the counts are taken, its READs and
//     RELEASE after. What one reading costs is measured at mount
//     (calibrate), and a timed part between two readings with k readings
//     in between is charged k times less.
//
// RELEASE and RELEASEDIR are asynchronous: after a timed part, readings
// repeat until three in a row differ by exactly one reading's cost, so
// that the last releases of the part are counted with it (settle).

// reqCounts are FUSE requests by opcode name.
type reqCounts map[string]int64

// minus returns c - d, opcode by opcode, without the zeros.
func (c reqCounts) minus(d reqCounts) reqCounts {
	out := reqCounts{}
	for op, n := range c {
		if v := n - d[op]; v != 0 {
			out[op] = v
		}
	}
	for op, n := range d {
		if _, ok := c[op]; !ok && n != 0 {
			out[op] = -n
		}
	}
	return out
}

// times returns c with every count multiplied by k.
func (c reqCounts) times(k int64) reqCounts {
	out := reqCounts{}
	for op, n := range c {
		out[op] = n * k
	}
	return out
}

func (c reqCounts) equal(d reqCounts) bool { return len(c.minus(d)) == 0 }

// String lists the counts by opcode name: "OPEN 1, READ 2, RELEASE 1"
// ("no request" for none).
func (c reqCounts) String() string {
	var parts []string
	for _, op := range slices.Sorted(maps.Keys(c)) {
		if c[op] != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", op, c[op]))
		}
	}
	if len(parts) == 0 {
		return "no request"
	}
	return strings.Join(parts, ", ")
}

// reqCounter reads the request counters of one mount daemon.
type reqCounter struct {
	read  func() (reqCounts, error)
	cost  reqCounts // what one read adds to the counts
	close func()
}

// counterOf returns d's request counter, set up at the first call: from
// the loopback's stdin, or from scanlockfs's .locks/metrics. It returns
// nil for a scanlockfs without request counters, and says so in the
// report.
func (b *bench) counterOf(d *daemon) (*reqCounter, error) {
	if d.counterTried {
		return d.counter, nil
	}
	d.counterTried = true
	c := &reqCounter{close: func() {}}
	switch d.kind {
	case vLoopback:
		c.read = func() (reqCounts, error) { return loopbackRequests(d) }
	case vScanlockfs:
		path := filepath.Join(d.mnt, ".locks", "metrics")
		fd, err := openRetry(path, unix.O_RDONLY, 0)
		if err != nil {
			b.rep.notef("FUSE requests of %s not counted: %v", d.label, err)
			return nil, nil
		}
		c.read = func() (reqCounts, error) { return metricsRequests(fd) }
		c.close = func() { unix.Close(fd) }
	default:
		return nil, fmt.Errorf("no request counter for %q", d.kind)
	}
	cost, err := calibrate(c.read)
	if errors.Is(err, errNoRequestCounts) || errors.Is(err, errUnsettled) {
		// The times are measured all the same.
		c.close()
		b.logf("WARNING: FUSE requests of %s not counted: %v", d.label, err)
		b.rep.notef("FUSE requests of %s not counted: %v", d.label, err)
		return nil, nil
	}
	if err != nil {
		c.close()
		return nil, fmt.Errorf("%s: reading the request counters: %w", d.label, err)
	}
	c.cost = cost
	d.counter = c
	b.logf("%s: one reading of the request counters costs %v", d.label, cost)
	return c, nil
}

var (
	errNoRequestCounts = errors.New("no scanlockfs_fuse_requests_total in .locks/metrics")
	errUnsettled       = errors.New("what a reading of them costs does not settle")
)

// calibrate measures what one read of the counters costs: readings
// 5 ms apart on an idle mount until two steps in a row agree.
func calibrate(read func() (reqCounts, error)) (reqCounts, error) {
	prev, err := read()
	if err != nil {
		return nil, err
	}
	var step reqCounts
	for i := 0; i < 20; i++ {
		time.Sleep(5 * time.Millisecond)
		cur, err := read()
		if err != nil {
			return nil, err
		}
		d := cur.minus(prev)
		if step != nil && d.equal(step) {
			return d, nil
		}
		step, prev = d, cur
	}
	return nil, fmt.Errorf("%w (last: %v)", errUnsettled, step)
}

// loopbackRequests asks the loopback for its counts.
func loopbackRequests(d *daemon) (reqCounts, error) {
	if err := d.p.send("requests"); err != nil {
		return nil, err
	}
	f, err := d.p.expect(context.Background(), 30*time.Second, "requests")
	if err != nil {
		return nil, err
	}
	c := reqCounts{}
	for _, kv := range f[1:] {
		op, n, ok := strings.Cut(kv, "=")
		v, err := strconv.ParseInt(n, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("loopback answered %q", strings.Join(f, " "))
		}
		c[op] = v
	}
	return c, nil
}

// metricsRequests opens the metrics file held open as fd once more and
// parses its scanlockfs_fuse_requests_total samples.
func metricsRequests(fd int) (reqCounts, error) {
	g, err := openRetry(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(g)
	// Reads of one size, so that a reading costs the same READs as the
	// document grows (it stays far below 64 KiB).
	var data []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(g, buf)
		switch {
		case err == unix.EINTR:
		case err != nil:
			return nil, err
		case n == 0:
			return parseRequestMetrics(data)
		default:
			data = append(data, buf[:n]...)
		}
	}
}

// parseRequestMetrics reads the lines
// scanlockfs_fuse_requests_total{op="LOOKUP"} 31 of a metrics document.
func parseRequestMetrics(doc []byte) (reqCounts, error) {
	const prefix = `scanlockfs_fuse_requests_total{op="`
	c := reqCounts{}
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		op, val, ok := strings.Cut(rest, `"} `)
		n, err := strconv.ParseInt(val, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("bad metrics line %q", sc.Text())
		}
		c[op] = n
	}
	if len(c) == 0 {
		return nil, errNoRequestCounts
	}
	return c, nil
}

// reqMeter charges the FUSE requests of the timed parts of one
// repetition on one target to their rows. Its methods do nothing for a
// target without counter (native).
type reqMeter struct {
	rp      *report
	c       *reqCounter // nil: nothing counted
	variant string
	rep     int       // < 0: a warm-up, not recorded
	last    reqCounts // the counts at the end of the previous part
	reads   int64     // readings since last
}

// meter reads t's counters before the first timed part of repetition
// rep.
func (b *bench) meter(t *target, rep int) (*reqMeter, error) {
	m := &reqMeter{rp: b.rep, rep: rep}
	if t.daemon == nil {
		return m, nil
	}
	c, err := b.counterOf(t.daemon)
	if err != nil || c == nil {
		return m, err
	}
	if m.last, err = c.read(); err != nil {
		return nil, fmt.Errorf("reading %s's request counters: %w", t.name, err)
	}
	m.c, m.variant = c, t.name
	pause()
	return m, nil
}

// pause lets a reading's own RELEASE be served before a timed part.
func pause() { time.Sleep(time.Millisecond) }

// mark charges the requests since the last mark (or the start) to row
// id, for ops operations. Call it after the part's time was taken.
func (m *reqMeter) mark(id string, ops int) error {
	c := m.c
	if c == nil {
		return nil
	}
	cur, err := m.settle(c)
	if err != nil {
		return fmt.Errorf("reading %s's request counters: %w", m.variant, err)
	}
	d := cur.minus(m.last).minus(c.cost.times(m.reads))
	m.last, m.reads = cur, 0
	if m.rep >= 0 {
		m.rp.addRequests(id, m.variant, d, ops)
	}
	pause()
	return nil
}

// settle reads the counters until three readings in a row differ by
// what a reading costs: the part's asynchronous releases, which the
// kernel queued when the part's last close returned, are then counted
// (on a loaded machine the daemon may take a while to serve them).
func (m *reqMeter) settle(c *reqCounter) (reqCounts, error) {
	prev, err := c.read()
	if err != nil {
		return nil, err
	}
	m.reads++
	quiet := 0
	for i := 0; i < 200 && quiet < 2; i++ {
		time.Sleep(time.Millisecond)
		cur, err := c.read()
		if err != nil {
			return nil, err
		}
		m.reads++
		if cur.minus(prev).equal(c.cost) {
			quiet++
		} else {
			quiet = 0
		}
		prev = cur
	}
	return prev, nil
}
