package harness

// A stand-in for github.com/mholt/caddy-webdav, which the module proxy here
// does not serve: the same module ID, directive and fields, over the same
// golang.org/x/net/webdav handler it wraps.

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/net/webdav"
)

// WebDAVStandIn does what mholt/caddy-webdav's handler does: the same
// module ID, directive and fields, and the same x/net/webdav set-up. A
// directory file system rooted at `root` (placeholders resolved, default the
// site root) whose files report file_server's ETag; one in-memory lock
// system per handler; the `prefix` (placeholders resolved) stripped from
// paths; GET and HEAD of a collection answered as PROPFIND with Depth 1.
type WebDAVStandIn struct {
	Root   string `json:"root,omitempty"`
	Prefix string `json:"prefix,omitempty"`

	lockSystem webdav.LockSystem
	logger     *zap.Logger
}

func (WebDAVStandIn) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.webdav", New: func() caddy.Module { return new(WebDAVStandIn) }}
}

func (wd *WebDAVStandIn) Provision(ctx caddy.Context) error {
	wd.logger = ctx.Logger()
	wd.lockSystem = webdav.NewMemLS()
	if wd.Root == "" {
		wd.Root = "{http.vars.root}"
	}
	return nil
}

func (wd WebDAVStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	h := &webdav.Handler{
		Prefix:     repl.ReplaceAll(wd.Prefix, ""),
		FileSystem: etagDir{webdav.Dir(repl.ReplaceAll(wd.Root, "."))},
		LockSystem: wd.lockSystem,
		Logger: func(req *http.Request, err error) {
			if err != nil {
				wd.logger.Debug("webdav request error", zap.String("method", req.Method), zap.Error(err))
			}
		},
	}
	// The plugin looks the collection up by the request path as it is,
	// prefix included.
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if info, err := h.FileSystem.Stat(r.Context(), r.URL.Path); err == nil && info.IsDir() {
			r.Method = "PROPFIND"
			if r.Header.Get("Depth") == "" {
				r.Header.Set("Depth", "1")
			}
		}
	}
	if r.Method == http.MethodHead {
		w = headWriter{w}
	}
	h.ServeHTTP(w, r)
	return nil
}

// headWriter drops the body of a HEAD response.
type headWriter struct{ http.ResponseWriter }

func (headWriter) Write(p []byte) (int, error) { return len(p), nil }

// etagDir gives its files file_server's ETag (modification time and size in
// base 36), as the plugin does so that If-Match from a client that read a
// file through file_server still matches. Its files are wrappers with no
// ReadFrom or WriteTo, so, as with the plugin, COPY moves every byte
// through a user-space buffer.
type etagDir struct{ webdav.Dir }

type etagFile struct{ webdav.File }

type etagInfo struct{ os.FileInfo }

func (d etagDir) OpenFile(ctx context.Context, name string, flag int, perm os.FileMode) (webdav.File, error) {
	f, err := d.Dir.OpenFile(ctx, name, flag, perm)
	if err != nil {
		return nil, err
	}
	return etagFile{f}, nil
}

func (d etagDir) Stat(ctx context.Context, name string) (os.FileInfo, error) {
	fi, err := d.Dir.Stat(ctx, name)
	if err != nil {
		return nil, err
	}
	return etagInfo{fi}, nil
}

func (f etagFile) Stat() (os.FileInfo, error) {
	fi, err := f.File.Stat()
	if err != nil {
		return nil, err
	}
	return etagInfo{fi}, nil
}

func (fi etagInfo) ETag(context.Context) (string, error) {
	t := fi.ModTime()
	if t.Unix() == 0 || t.Unix() == 1 {
		return "", nil
	}
	return `"` + strconv.FormatInt(t.UnixNano(), 36) + strconv.FormatInt(fi.Size(), 36) + `"`, nil
}

// UnmarshalCaddyfile reads the plugin's syntax:
//
//	webdav [<matcher>] {
//		root   <path>
//		prefix <path>
//	}
func (wd *WebDAVStandIn) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "root":
			if !d.Args(&wd.Root) {
				return d.ArgErr()
			}
		case "prefix":
			if !d.Args(&wd.Prefix) {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized webdav subdirective %q", d.Val())
		}
	}
	return nil
}

func init() {
	caddy.RegisterModule(WebDAVStandIn{})
	// No RegisterDirectiveOrder: like the plugin, webdav needs the user's
	// `order webdav before file_server`, which startWebDAVCaddy adds.
	httpcaddyfile.RegisterHandlerDirective("webdav", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		wd := new(WebDAVStandIn)
		err := wd.UnmarshalCaddyfile(h.Dispenser)
		return wd, err
	})
}

// StartWebDAVCaddy runs sites behind the harness's global options plus the
// `order webdav before file_server` line the plugin's README asks for. Like
// StartCaddy, it waits for the certificate of an https site.
func StartWebDAVCaddy(t testing.TB, root, sites string) (port, tlsPort int) {
	t.Helper()
	global := strings.Replace(GlobalOptions(t), "{\n", "{\n\torder webdav before file_server\n", 1)
	return StartCaddyGlobal(t, global, strings.ReplaceAll(sites, "{ROOT}", root))
}

// MakeTree writes files files of size bytes each under dir, ten to a
// folder, three folders deep, each with content of its own.
func MakeTree(t testing.TB, dir string, files, size int) {
	t.Helper()
	buf := make([]byte, size)
	for i := range files {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", i/100), fmt.Sprintf("e%d", i/10%10))
		if i%10 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for j := range buf {
			buf[j] = byte(i*31 + j*7)
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%d.bin", i)), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TreeDigest lists every entry under dir, relative to it, with a hash of
// each file's bytes, so two trees compare equal only when they hold the same
// folders and byte-identical files.
func TreeDigest(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			out[rel+"/"] = "dir"
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = fmt.Sprintf("%x", sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// SameTree fails the test unless got holds exactly what want holds.
func SameTree(t testing.TB, want, got map[string]string) {
	t.Helper()
	missing, differ := 0, 0
	for k, v := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing++
		case g != v:
			differ++
		}
	}
	if missing > 0 || differ > 0 || len(got) != len(want) {
		t.Fatalf("destination tree: %d entries missing, %d differ, %d entries for %d in the source", missing, differ, len(got), len(want))
	}
}
