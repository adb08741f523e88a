package lockmgr

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"sync"

	"scanlockfs/internal/procfs"
)

// Mode is the kind of lock: Shared for readers, Exclusive for writers.
type Mode int

// Lock modes. The zero Mode means "no lock".
const (
	Shared    Mode = 1
	Exclusive Mode = 2
)

func (m Mode) String() string {
	switch m {
	case Shared:
		return "shared"
	case Exclusive:
		return "exclusive"
	case 0:
		return "none"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Owner identifies who holds a lock. Requests with equal User and Key come
// from the same owner: an owner may take a lock it already holds again
// (counted), and may upgrade a shared lock it is the only holder of.
// Owners that must exclude each other need different keys.
type Owner struct {
	// User is the user name recorded in .info files and status.
	User string
	// Key tells owners of one user apart. For a process it is
	// ProcessKey's "pid:PID@START", which a later process that gets the
	// same pid cannot have.
	Key string
	// PID is the process the owner stands for, shown in status (0 for
	// this process).
	PID int
	// Note says what the lease is for (for example the path a program
	// opened); it is shown in status and is not part of the identity.
	Note string
}

type ownerID struct{ user, key string }

func (o Owner) id() ownerID { return ownerID{o.User, o.Key} }

func (o Owner) String() string {
	if o.PID != 0 {
		return fmt.Sprintf("%s/%s(pid %d)", o.User, o.Key, o.PID)
	}
	return o.User + "/" + o.Key
}

var currentUser = sync.OnceValue(func() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return strconv.Itoa(os.Getuid())
})

// ProcessKey returns the owner key of the process pid that started at
// start (clock ticks after boot, field 22 of /proc/PID/stat):
// "pid:PID@START". A pid is reused once its process is gone, a pid with
// its start time is not (short of two processes with one pid starting
// within one clock tick, 10 ms), so a new process cannot take over the
// leases of an exited one by getting its pid.
func ProcessKey(pid int, start uint64) string {
	return "pid:" + strconv.Itoa(pid) + "@" + strconv.FormatUint(start, 10)
}

// processKey is this process's ProcessKey, read once.
var processKey = sync.OnceValue(func() string {
	pid := os.Getpid()
	st, err := procfs.ReadStat(pid)
	if err != nil {
		// Without /proc the pid alone; no other process of this
		// manager's can share it while this one runs.
		return "pid:" + strconv.Itoa(pid)
	}
	return ProcessKey(pid, st.StartTime)
})

// ProcessOwner returns an owner for the whole calling process: every
// goroutine using it shares its locks (like plantdb's per-process counts).
// Its key is ProcessKey's, for the pid and start time of this process.
func ProcessOwner() Owner {
	return Owner{User: currentUser(), Key: processKey(), PID: os.Getpid()}
}

// UserName returns the name of the user running this process.
func UserName() string { return currentUser() }
