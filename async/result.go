package async

// A job's final response: recorded as the handlers write it, stored in
// pieces, and served from storage a piece at a time, so that neither the
// job nor a reader holds a whole result in memory, and storages that cap
// the size of a value (Consul's KV store refuses values over 512 KB) can
// keep results of any size up to max_result.
//
// Stored layout, format version 2:
//
//	processing/jobs/<id>/result     one line of JSON: resultHead
//	processing/jobs/<id>/body/<n>   piece n of the body, n from 0; every
//	                                piece but the last is resultPieceSize
//
// The pieces are written first and the head last, so a reader that finds
// the head finds every piece. Version 1 (no "version" in the head) kept the
// body in the same value, after the head's line; it is still read.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"

	"github.com/caddyserver/certmagic"
)

// resultPieceSize is the most bytes of a body stored in one value: a
// quarter of Consul's 512 KB limit would do, but storage modules such as
// caddy-storage-redis keep a value as base64 inside JSON, a third larger,
// so 256 KiB stays under 512 KB everywhere. It is also what a reader of a
// result holds in memory at once.
const resultPieceSize = 256 << 10

// resultFormat is the version of the stored layout this code writes.
const resultFormat = 2

func jobBodyPieceKey(id string, n int) string {
	return path.Join(jobsPrefix, id, "body", strconv.Itoa(n))
}

// resultHead is the stored head of a result.
type resultHead struct {
	Version int         `json:"version,omitempty"` // 0: version 1
	Status  int         `json:"status"`
	Header  http.Header `json:"header"`
	// Size is the body's length in bytes, Pieces how many values hold it.
	Size   int64 `json:"size,omitempty"`
	Pieces int   `json:"pieces,omitempty"`
	// HeadLength is the Content-Length that the handlers of a HEAD job
	// announced, -1 if none; 0 (absent) for other methods.
	HeadLength int64 `json:"head_length,omitempty"`
}

// recorder is the ResponseWriter of a job's handlers. It keeps the final
// status, the header as it was when the status was written, and the body
// up to max bytes: the first piece in memory, the rest, once there is
// more, in a temporary file (caddy-processing-<pid>/result-*), removed when the
// job ends. Beyond max the job fails and nothing of it is kept.
// 1xx responses are dropped: the job's client is not connected, and
// reverse_proxy writes them from its transport's goroutine, so they must
// touch nothing here.
type recorder struct {
	header     http.Header
	status     int
	sent       http.Header // the header at the final status
	mem        []byte      // the body while it fits one piece
	file       *os.File    // the body once it does not
	fileBuf    *bufio.Writer
	size       int64 // bytes of body written
	max        int64
	overflow   bool
	onOverflow func()
	writeErr   error // the temporary file failed: the job fails

	head bool     // the request was HEAD
	base *url.URL // the submitted request's target, for relative references

	// onInterim sees each 1xx's header, on the goroutine that wrote it,
	// for the job's Progress (progress.go).
	onInterim func(http.Header)
}

func (rc *recorder) Header() http.Header {
	if rc.header == nil {
		rc.header = make(http.Header)
	}
	return rc.header
}

func (rc *recorder) WriteHeader(code int) {
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		if rc.onInterim != nil {
			rc.onInterim(rc.header)
		}
		return
	}
	if rc.status != 0 {
		return
	}
	rc.status = code
	rc.sent = rc.Header().Clone()
}

func (rc *recorder) Write(p []byte) (int, error) {
	if rc.status == 0 {
		rc.WriteHeader(http.StatusOK)
	}
	if rc.overflow {
		return 0, errResultTooLarge
	}
	if rc.writeErr != nil {
		return 0, rc.writeErr
	}
	if rc.size+int64(len(p)) > rc.max {
		rc.overflow = true
		rc.remove()
		if rc.onOverflow != nil {
			rc.onOverflow()
		}
		return 0, errResultTooLarge
	}
	if rc.file == nil && len(rc.mem)+len(p) <= resultPieceSize {
		rc.mem = append(rc.mem, p...)
		rc.size += int64(len(p))
		return len(p), nil
	}
	if rc.file == nil {
		// In this process's own folder (bodydir.go), which the next
		// start removes if the process is killed meanwhile.
		dir, err := bodyDir()
		var f *os.File
		if err == nil {
			f, err = os.CreateTemp(dir, "result-*")
		}
		if err != nil {
			rc.writeErr = fmt.Errorf("result file: %w", err)
			return 0, rc.writeErr
		}
		rc.file, rc.fileBuf = f, bufio.NewWriterSize(f, 64<<10)
		_, _ = rc.fileBuf.Write(rc.mem) // an error stays in the bufio.Writer
		rc.mem = nil
	}
	n, err := rc.fileBuf.Write(p)
	rc.size += int64(n)
	if err != nil {
		rc.writeErr = fmt.Errorf("result file: %w", err)
	}
	return n, err
}

// FlushError lets http.ResponseController.Flush succeed: there is no
// connection to flush to.
func (rc *recorder) FlushError() error { return nil }

// Flush implements http.Flusher.
func (rc *recorder) Flush() {}

// resultHead is the recorded status and header, hop-by-hop fields removed
// and relative references resolved against the submitted request.
func (rc *recorder) resultHead() resultHead {
	status := rc.status
	if status == 0 {
		status = http.StatusOK // net/http's implicit status
	}
	sent := rc.sent
	if sent == nil {
		sent = rc.header // handlers that set fields and wrote nothing
	}
	h := resultHead{Version: resultFormat, Status: status, Header: endToEnd(sent), Size: rc.size}
	resolveReferences(h.Header, rc.base)
	if rc.head {
		h.HeadLength = headLength(sent, rc.size)
	}
	h.Pieces = int((rc.size + resultPieceSize - 1) / resultPieceSize)
	return h
}

// body is a reader of the recorded body from its start, for the direct
// answer and for storing.
func (rc *recorder) body() (io.Reader, error) {
	if rc.file == nil {
		return bytes.NewReader(rc.mem), nil
	}
	if err := rc.fileBuf.Flush(); err != nil {
		return nil, err
	}
	return io.NewSectionReader(rc.file, 0, rc.size), nil
}

// remove lets go of the recorded body.
func (rc *recorder) remove() {
	rc.mem = nil
	if rc.file != nil {
		rc.file.Close()
		os.Remove(rc.file.Name())
		rc.file, rc.fileBuf = nil, nil
	}
}

// resultToStore is what a job that succeeded stores: the encoded head and
// the recorder holding its body.
type resultToStore struct {
	head []byte
	rec  *recorder
}

// resultToStore encodes the job's result. A job bound to nothing stores
// no Set-Cookie (access.go).
func (j *job) resultToStore() (resultToStore, error) {
	h := j.rec.resultHead()
	if j.auth == "" {
		unboundHeader(h.Header)
	}
	b, err := json.Marshal(h)
	if err != nil {
		return resultToStore{}, err
	}
	return resultToStore{head: append(b, '\n'), rec: &j.rec}, nil
}

// size is how many bytes the result takes in storage.
func (r resultToStore) size() int64 { return int64(len(r.head)) + r.rec.size }

// storeResult writes the result's pieces, then its head. On an error it
// removes what it wrote, so that no piece outlives a failed store.
func storeResult(ctx context.Context, storage certmagic.Storage, id string, r resultToStore) error {
	err := storeResultPieces(ctx, storage, id, r)
	if err == nil {
		err = storage.Store(ctx, jobResultKey(id), r.head)
	}
	if err != nil {
		_ = storage.Delete(ctx, jobBodyKey(id))
	}
	return err
}

func storeResultPieces(ctx context.Context, storage certmagic.Storage, id string, r resultToStore) error {
	body, err := r.rec.body()
	if err != nil {
		return fmt.Errorf("result file: %w", err)
	}
	buf := make([]byte, resultPieceSize)
	for n := 0; ; n++ {
		k, err := io.ReadFull(body, buf)
		if k > 0 {
			// Store may keep the slice (an in-memory storage): a copy
			// of its own for each piece.
			if err := storage.Store(ctx, jobBodyPieceKey(id, n), bytes.Clone(buf[:k])); err != nil {
				return err
			}
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return nil
		case err != nil:
			return fmt.Errorf("result file: %w", err)
		}
	}
}

// loadResultHead reads a stored head; body is the inline body of a
// version 1 result, nil for version 2.
func loadResultHead(ctx context.Context, storage certmagic.Storage, id string) (h resultHead, body []byte, err error) {
	b, err := storage.Load(ctx, jobResultKey(id))
	if err != nil {
		return h, nil, err
	}
	line, rest, ok := bytes.Cut(b, []byte("\n"))
	if !ok {
		return h, nil, errors.New("stored result has no header line")
	}
	if err := json.Unmarshal(line, &h); err != nil {
		return h, nil, err
	}
	if h.Status < 200 || h.Status > 999 {
		return h, nil, fmt.Errorf("stored result has status %d", h.Status)
	}
	switch h.Version {
	case 0: // version 1: the body follows the head's line
		h.Size, h.Pieces = int64(len(rest)), 0
		return h, rest, nil
	case resultFormat:
		if h.Size < 0 || h.Pieces != int((h.Size+resultPieceSize-1)/resultPieceSize) {
			return h, nil, fmt.Errorf("stored result of %d bytes in %d pieces", h.Size, h.Pieces)
		}
		return h, nil, nil
	}
	return h, nil, fmt.Errorf("stored result has format version %d, this code reads 1 and %d", h.Version, resultFormat)
}

// writeResultBody copies a version 2 body from storage to w a piece at a
// time. A piece that is missing or of the wrong size (the job deleted
// meanwhile) is an error after the header went out: the response is cut
// short of its Content-Length, which every client reports.
func writeResultBody(ctx context.Context, storage certmagic.Storage, w io.Writer, id string, h resultHead) error {
	left := h.Size
	for n := range h.Pieces {
		p, err := storage.Load(ctx, jobBodyPieceKey(id, n))
		if err != nil {
			return fmt.Errorf("loading piece %d of the result: %w", n, err)
		}
		if want := min(left, resultPieceSize); int64(len(p)) != want {
			return fmt.Errorf("piece %d of the result holds %d bytes, want %d", n, len(p), want)
		}
		if _, err := w.Write(p); err != nil {
			return err
		}
		left -= int64(len(p))
	}
	return nil
}
