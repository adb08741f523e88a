package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// timedIn runs a program in dir ("" for here) with stdin as its input and
// its output discarded, and returns its wall time in milliseconds.
func timedIn(ctx context.Context, dir, stdin, name string, args ...string) (float64, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	return float64(time.Since(start).Nanoseconds()) / 1e6, nil
}
