package mountcmd

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

const goFuseModule = "github.com/hanwen/go-fuse/v2"

func init() {
	register(&cli.Command{
		Name:      "version",
		Usage:     "print the versions of scanlockfs, Go and go-fuse",
		UsageText: "scanlockfs version",
		Description: "Prints one 'NAME VERSION' pair per line, for bug reports:\n" +
			"  scanlockfs v1.2.0\n  go go1.26.0\n  go-fuse v2.12.1",
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageErrorf("version takes no arguments")
			}
			for _, l := range versionLines() {
				fmt.Fprintln(c.App.Writer, l)
			}
			return nil
		},
	})
}

// versionLines reads the module versions the binary was built with.
func versionLines() []string {
	self, fuse := Version, "(not linked)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if self == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			self = bi.Main.Version // go install scanlockfs@vX.Y.Z
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && self == "dev" {
				self = "dev-" + s.Value[:min(12, len(s.Value))]
			}
		}
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
		"scanlockfs " + self,
		"go " + runtime.Version(),
		"go-fuse " + fuse,
	}
}
