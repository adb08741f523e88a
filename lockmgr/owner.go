package lockmgr

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"sync"
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
	// Key tells owners of one user apart, for example "pid:1234".
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

// ProcessOwner returns an owner for the whole calling process: every
// goroutine using it shares its locks (like plantdb's per-process counts).
func ProcessOwner() Owner {
	pid := os.Getpid()
	return Owner{User: currentUser(), Key: "pid:" + strconv.Itoa(pid), PID: pid}
}

// UserName returns the name of the user running this process.
func UserName() string { return currentUser() }
