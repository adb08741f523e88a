package scanstatus

// Redactor decides what one reader of a document may see. The daemon
// implements it (fusefs/status_viewer.go): a reader learns no more than
// it could find out itself.
type Redactor interface {
	// ShowPath reports whether the reader may see path, the file that a
	// program of the mount running as user opened.
	ShowPath(path, user string) bool
	// ShowNote reports whether the reader may see the note of a process
	// on SOURCE whose real user is user.
	ShowNote(note, user string) bool
}

// Redact empties what r hides in s and marks it hidden (PathHidden,
// NoteHidden). A nil r hides nothing.
func (s *Scan) Redact(r Redactor) {
	if r == nil {
		return
	}
	for i := range s.Holders {
		s.Holders[i].redact(r)
	}
	for i := range s.Waiters {
		s.Waiters[i].redact(r)
	}
}

func (e *Entry) redact(r Redactor) {
	if e.Path != "" && !r.ShowPath(e.Path, e.User) {
		e.Path, e.PathHidden = "", true
	}
	if e.Note != "" && !r.ShowNote(e.Note, e.User) {
		e.Note, e.NoteHidden = "", true
	}
}
