package processing

import (
	"github.com/c055b0d7/caddy-processing/internal/progress"
)

// The Progress field of draft-wright-http-progress on the core's 102s: when
// the next handler writes a 1xx carrying a valid Progress (reverse_proxy
// forwarding an upstream's own 102, or a handler's), the module's later 102s
// for the request carry that value, the latest one. A value the draft's
// grammar does not allow (internal/progress) is ignored.

// noteProgressLocked keeps the Progress of the 1xx about to be forwarded,
// whose fields realHeader holds. The value joins the request's 102 fields:
// w.fields becomes a copy of them with it, so the writer needs no field of
// its own (its size is bounded, TestWriterSize) and sendInterimLocked
// writes it as any configured field. Called under stateMu, which
// guards w.fields from the first schedule on.
func (w *interimWriter) noteProgressLocked() {
	v, ok := progress.Of(w.realHeader[progress.FieldName])
	if !ok {
		return
	}
	old := *w.fields
	fields := make([]headerField, 0, len(old)+1)
	for _, f := range old {
		if f.name != progress.FieldName {
			fields = append(fields, f)
		}
	}
	fields = append(fields, headerField{name: progress.FieldName, values: []string{v}})
	w.fields = &fields
}
