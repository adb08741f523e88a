package fusefs

import "testing"

// An event for a name waits for the mount's own requests for that name
// begun before it was read, and for no other.
func TestOwnChangesHoldEventsBackUntilTheRequestEnds(t *testing.T) {
	o := newOwnChanges()
	create := o.begin("a")
	upTo := o.mark() // an event read now may come from create
	later := o.begin("a", "b")

	ran := 0
	if o.after("b", upTo, func() { ran++ }) {
		t.Fatal("an event for b waits for a request begun after it was read")
	}
	if o.after("c", upTo, func() { ran++ }) {
		t.Fatal("an event for c waits although no request for c runs")
	}
	if !o.after("a", upTo, func() { ran++ }) {
		t.Fatal("an event for a does not wait for the create of a")
	}
	o.end(later, "a", "b")
	if ran != 0 {
		t.Fatal("the event ran when a request begun after it ended")
	}
	o.end(create, "a")
	if ran != 1 {
		t.Fatalf("the event ran %d times once the create ended, want 1", ran)
	}
	if len(o.active) != 0 || len(o.waiting) != 0 {
		t.Fatalf("left behind: active %v, waiting %d", o.active, len(o.waiting))
	}
}
