package checker

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"scanlockfs/lockmgr"
)

func TestErrNameIsOneWord(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("open /m/s/f: %w", syscall.EAGAIN):                       "EAGAIN",
		fmt.Errorf("scan s: %w", lockmgr.ErrTimeout):                        "TIMEOUT",
		fmt.Errorf("scan s: %w", lockmgr.ErrWouldBlock):                     "WOULDBLOCK",
		fmt.Errorf("scan s: %w", lockmgr.ErrDeadlock):                       "DEADLOCK",
		errors.New("something else went wrong"):                             "something_else_went_wrong",
		syscall.Errno(4095):                                                 "4095",
		fmt.Errorf("%w /l/s.lock: %w", lockmgr.ErrLockFile, syscall.EMFILE): "",
	} {
		got := ErrName(err)
		if want == "" {
			want = strings.ReplaceAll(err.Error(), " ", "_")
		}
		if got != want {
			t.Errorf("ErrName(%v) = %q, want %q", err, got, want)
		}
	}
}
