package scanstatus

import (
	"bytes"
	"encoding/json"
)

// Encode renders a document (InfoDoc, MountDoc, SourceDoc) as indented
// JSON with a final newline. Strings from other programs (command names,
// notes from .info files, paths) may hold anything: encoding/json escapes
// control characters and replaces invalid UTF-8, so the document stays
// valid JSON; HTML characters are left as they are.
func Encode(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		// Not reachable with the document types; still a document.
		b.Reset()
		msg, _ := json.Marshal(err.Error())
		b.WriteString(`{"error": ` + string(msg) + "}\n")
	}
	return b.Bytes()
}
