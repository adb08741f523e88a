// Command scanlockfs mounts a scan database through a FUSE overlay that
// takes plantdb-compatible scan locks for unmodified programs. See
// package mountcmd for the command line.
package main

import (
	"os"

	"scanlockfs/mountcmd"
)

func main() {
	os.Exit(mountcmd.Main(os.Args))
}
