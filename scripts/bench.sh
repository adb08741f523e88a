#!/usr/bin/env bash
# Measure what scanlockfs costs, in one command:
#
#   ./scripts/bench.sh [-plot ratios.png] [-csv bench.csv] [-markdown bench.md] [flags]
#
# Builds scanlockfs and the plain loopback baseline, creates its data
# under $TMPDIR, mounts and unmounts by itself, and prints a Markdown
# table of workloads 1-13 (native, loopback, loopback-defaults, scanlockfs,
# ratios, targets) and one of the FUSE requests per operation.
# Needs FUSE (/dev/fuse; fusermount3 from Debian's fuse3 unless root) and
# python3 for the plantdb peer. See scripts/bench/README.md and -h.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

if ! command -v fusermount3 >/dev/null 2>&1 && [ "$(id -u)" -ne 0 ]; then
	echo "bench.sh: fusermount3 is missing; install it with: sudo apt-get install fuse3" >&2
	exit 1
fi
# The bench is a module of its own (scripts/bench/go.mod), so that the
# product's go.mod lists only what the product uses: build it there, and
# run it from here, where relative paths in the flags are meant.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go -C scripts/bench build -o "$tmp/bench" .
"$tmp/bench" "$@"
