package testpeer

import (
	"bufio"
	"io"
	"strings"
)

// Serve is the command loop of every helper peer: it reads commands from
// in, one a line, and calls run with each line's fields. Blank lines are
// skipped; "quit", the end of input or an error from run ends it, and
// Serve returns that error or the error reading in.
func Serve(in io.Reader, run func(f []string) error) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" {
			return nil
		}
		if err := run(f); err != nil {
			return err
		}
	}
	return sc.Err()
}
