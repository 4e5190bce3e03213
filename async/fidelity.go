package async

// What a recorded response keeps of the one the handlers would have sent
// to the client directly.

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// targetOf is the target URI the client asked for, as the base against
// which relative references in the response resolve (RFC 9110 §10.2.2,
// §8.7): the request as it arrived, before any rewrite in the site, which
// Caddy keeps in the context; path and query only, as the result is served
// on the same origin.
func targetOf(r *http.Request) *url.URL {
	u := r.URL
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		u = orig.URL
	}
	return &url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}
}

// resolveReferences rewrites a relative Location or Content-Location
// against base: the result is served at <monitor>/<id>/result, where a
// client would resolve `items/42` against the monitor's path instead of
// the submitted request's (RFC 3986 §5.2).
func resolveReferences(h http.Header, base *url.URL) {
	if base == nil {
		return
	}
	for _, name := range []string{"Location", "Content-Location"} {
		for i, v := range h[name] {
			u, err := url.Parse(v)
			if err != nil || v == "" || u.IsAbs() || u.Host != "" {
				continue
			}
			h[name][i] = base.ResolveReference(u).String()
		}
	}
}

// headLength is the Content-Length a HEAD request's handlers announced: the
// field they set, else the count of bytes they wrote (which net/http would
// have announced and discarded, server.go). -1 when neither tells.
func headLength(sent http.Header, written int64) int64 {
	if v := sent.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			return n
		}
	}
	if written > 0 {
		return written
	}
	return -1
}
