//go:build race

package tests

// raceEnabled builds the daemon with the race detector too when the
// tests run with -race: a data race in the daemon under the e2e load
// makes it exit with status 66, which fails the test that mounted it.
const raceEnabled = true
