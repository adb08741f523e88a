package mountcmd

import (
	"fmt"
	"regexp"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// Version is the version of scanlockfs, set at build time to what
// `git describe --tags --always --dirty` says (scripts/version):
//
//	go build -ldflags "-X scanlockfs/mountcmd.Version=$(scripts/version)"
//
// That is the tag ("v1.2.0"), the tag and the commits since it
// ("v1.2.0-3-g1a2b3c4"), or without a tag the commit ("1a2b3c4"), with
// "-dirty" when the checkout had changes. Left empty (a plain go build),
// version() derives the same commit form from the build information.
var Version = ""

const goFuseModule = "github.com/hanwen/go-fuse/v2"

// commitAbbrev is the length of an abbreviated commit, as git describe
// prints it by default.
const commitAbbrev = 7

// printVersion is --version: the first line of `scanlockfs version`.
func printVersion(c *cli.Context) {
	fmt.Fprintf(c.App.Writer, "%s %s\n", c.App.Name, c.App.Version)
}

// versionCommand is `scanlockfs version`.
func versionCommand() *cli.Command {
	return &cli.Command{
		Name:      "version",
		Usage:     "print the versions of scanlockfs, Go and go-fuse",
		UsageText: "scanlockfs version",
		Description: "Prints one 'NAME VERSION' pair per line, for bug reports:\n" +
			"  scanlockfs v1.2.0-3-g1a2b3c4\n  go go1.26.0\n  go-fuse v2.12.1\n" +
			"The scanlockfs version is what 'git describe --tags --always --dirty' said when it was\n" +
			"built: the release tag, the tag and the commits since it, or the commit; '-dirty' when\n" +
			"the checkout had changes. 'scanlockfs --version' prints the first line.",
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageErrorf("version takes no arguments")
			}
			for _, l := range versionLines() {
				fmt.Fprintln(c.App.Writer, l)
			}
			return nil
		},
	}
}

// pseudoVersion matches the end of a Go pseudo-version: a UTC time and
// a 12-digit commit, possibly marked +dirty.
var pseudoVersion = regexp.MustCompile(`[.-]\d{14}-[0-9a-f]{12}(\+dirty)?$`)

// version is Version, or what the build information says: the module
// version of `go install scanlockfs@vX.Y.Z`, else the commit the binary
// was built from, else "unknown".
func version() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	// Since Go 1.24 a build in a git checkout stamps a module version too:
	// the tag when the commit has one, else a pseudo-version
	// (v0.0.0-20261202092314-0c2ab93ed58b), for which the commit form below
	// says the same as git describe.
	if v := bi.Main.Version; v != "" && v != "(devel)" && !pseudoVersion.MatchString(v) {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value[:min(commitAbbrev, len(s.Value))]
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	switch {
	case rev == "":
		return "unknown"
	case dirty:
		return rev + "-dirty"
	}
	return rev
}

// versionLines reads the module versions the binary was built with.
func versionLines() []string {
	fuse := "(not linked)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == goFuseModule {
				fuse = d.Version
				if d.Replace != nil {
					fuse += " => " + d.Replace.Path + " " + d.Replace.Version
				}
			}
		}
	}
	return []string{
		"scanlockfs " + version(),
		"go " + runtime.Version(),
		"go-fuse " + fuse,
	}
}
