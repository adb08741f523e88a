// Package scanstatus is the one model of a scan lock's state: who holds
// scan S and who waits for it, where each of them is, since when. The
// daemon renders it as MOUNTPOINT/.locks/S.info and status.json, and
// `scanlockfs status --json` prints it; the reader of a running mount's
// status.json (FindMounts, ReadMount) lives here too, beside the types it
// decodes, so that clients need not import the server (fusefs).
//
// Data flows one way: lockmgr's view (lockmgr.ScanStatus) is converted
// once, by FromLockmgr, into a Scan; a Scan may then be redacted for a
// reader (Redact) and is rendered by encoding/json (Encode) or as a
// table. There is no way back to lockmgr's types.
//
// The JSON documents are an interface for scripts (jq, watch, scanlockfs
// status): every key is always present, unknown times are null, and keys
// are added, never renamed or removed. Where a holder is has one
// vocabulary (Where: "mount" or "source"); times have one format (Time:
// RFC 3339 with milliseconds), with the same instant in seconds since
// the epoch beside it ("_unix" keys).
package scanstatus
