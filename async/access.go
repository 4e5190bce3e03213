package async

// Who may see a job. A job is bound to its submitter by a hash of the id
// and what identifies the submitter: the Authorization field, as HTTP
// authentication sends it on every request (RFC 9110 §11.6.2), and the
// values the `bind` placeholders resolve to, for a site whose users are
// identified otherwise, most often by a session cookie
// (`bind {http.request.cookie.session}`). The monitor answers a request
// only if the same values hash the same. A job bound to nothing is served
// to anyone holding its id, and its stored result carries no Set-Cookie:
// a cookie is the submitter's (RFC 6265 §4.1) and must not be handed to
// every holder of the id.

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// bindingHash is the hex SHA-256 of the id, the Authorization values and
// the resolved bind values of r, or "" when r has none of them: then the
// job is bound to nothing. The id acts as a salt, so equal credentials
// give unrelated hashes across jobs. Without bind values the hash is the
// one earlier versions stored (id, then each Authorization value after a
// zero byte), so their records keep working.
func (a *Config) bindingHash(id string, r *http.Request) string {
	auth := r.Header["Authorization"]
	bound := a.resolveBind(r)
	if len(auth) == 0 && bound == nil {
		return ""
	}
	h := sha256.New()
	h.Write([]byte(id))
	for _, v := range auth {
		h.Write([]byte{0})
		h.Write([]byte(v))
	}
	// Each bind value after a one byte and its length, so that no two
	// lists of values hash the same input.
	var n [8]byte
	for _, v := range bound {
		h.Write([]byte{1})
		binary.BigEndian.PutUint64(n[:], uint64(len(v)))
		h.Write(n[:])
		h.Write([]byte(v))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// resolveBind is the values of the bind placeholders for r, in order, or
// nil when there are none or every one resolved empty (a request without
// the session cookie binds nothing).
func (a *Config) resolveBind(r *http.Request) []string {
	if len(a.Bind) == 0 {
		return nil
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return nil
	}
	out := make([]string, len(a.Bind))
	empty := true
	for i, b := range a.Bind {
		out[i] = repl.ReplaceAll(b, "")
		if out[i] != "" {
			empty = false
		}
	}
	if empty {
		return nil
	}
	return out
}

// bindingMatches reports whether r may see the job of rec: the job is bound
// to nothing, or r's values hash the same, compared in constant time, so
// that timing says nothing of the stored hash.
func (a *Config) bindingMatches(rec jobRecord, r *http.Request) bool {
	if rec.Auth == "" {
		return true
	}
	got := a.bindingHash(rec.ID, r)
	return subtle.ConstantTimeCompare([]byte(got), []byte(rec.Auth)) == 1
}

// validateBind accepts values that each hold a placeholder: a constant
// would bind every job to the same value, which binds nothing.
func validateBind(values []string) error {
	for _, v := range values {
		if !strings.Contains(v, "{") || !strings.Contains(v, "}") {
			return fmt.Errorf("expected placeholders such as {http.request.cookie.session}, got %q", v)
		}
	}
	return nil
}

// unboundHeader is the header of a result that will be served to anyone
// holding the job's id: without Set-Cookie.
func unboundHeader(h http.Header) http.Header {
	h.Del("Set-Cookie")
	return h
}
