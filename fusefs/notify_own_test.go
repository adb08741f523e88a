package fusefs

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// An event for a name waits for the mount's own requests for that name
// that were changing SOURCE when it was read, and for no other: not one
// still waiting for its lock, not one granted after.
func TestOwnChangesHoldEventsBackUntilTheRequestEnds(t *testing.T) {
	nt := &notifier{own: newOwnChanges()}
	o := nt.own
	request := func(names ...string) *fuse.Context {
		ctx := &fuse.Context{Cancel: make(chan struct{})}
		o.enter(ctx.Cancel, names...)
		return ctx
	}
	create := request("a")
	waiting := request("a") // still waiting for its lock
	nt.granted(create)
	upTo := o.mark() // an event read now may come from create
	later := request("a", "b")
	nt.granted(later)

	ran := 0
	if o.after("b", upTo, func() { ran++ }) {
		t.Fatal("an event for b waits for a request granted after it was read")
	}
	if o.after("c", upTo, func() { ran++ }) {
		t.Fatal("an event for c waits although no request for c runs")
	}
	if !o.after("a", upTo, func() { ran++ }) {
		t.Fatal("an event for a does not wait for the create of a")
	}
	o.leave(later.Cancel)
	if ran != 0 {
		t.Fatal("the event ran when a request granted after it ended")
	}
	o.leave(create.Cancel)
	if ran != 1 {
		t.Fatalf("the event ran %d times once the create ended, want 1", ran)
	}
	o.leave(waiting.Cancel)
	if len(o.byReq) != 0 || len(o.active) != 0 || len(o.waiting) != 0 {
		t.Fatalf("left behind: requests %d, active %v, waiting %d", len(o.byReq), o.active, len(o.waiting))
	}
}
