// Command modzip publishes the checkout's HEAD commit as a module version in
// a file-based module proxy, so that interop/xcaddy.sh can build Caddy with
// `xcaddy build --with <module>@<version>` the way a user does: the go
// command fetches the module from a proxy, as a zip, by its version.
//
//	(cd interop && go build -o /tmp/modzip ./modzip) && /tmp/modzip -proxy DIR   # in the module root
//
// It prints the version, a pseudo-version of HEAD
// (v0.0.0-<commit time>-<commit>), and writes DIR/<module>/@v/ with the
// files a proxy serves: list, <version>.info, .mod and .zip. Use the
// folder with GOPROXY=file://DIR,<the usual proxy> and the module's path
// in GONOSUMDB: the checksum database has never seen this version.
//
// The zip holds what `git archive HEAD` holds, as the go command builds a
// zip from a repository: committed files only, so a build output or an
// uncommitted change never reaches it.
package main

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("modzip: ")
	proxy := flag.String("proxy", "", "folder of the file-based module proxy to write into")
	rev := flag.String("rev", "HEAD", "git revision to publish")
	flag.Parse()
	if *proxy == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	version, err := publish(*proxy, *rev)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(version)
}

// publish writes the module at rev into the proxy folder and returns its
// version.
func publish(proxy, rev string) (string, error) {
	// The go command names a commit in a pseudo-version by the first 12
	// hex digits of its hash.
	hash, err := git("rev-parse", "--verify", rev+"^{commit}")
	if err != nil {
		return "", err
	}
	unix, err := git("show", "-s", "--format=%ct", hash)
	if err != nil {
		return "", err
	}
	secs, err := strconv.ParseInt(unix, 10, 64)
	if err != nil {
		return "", fmt.Errorf("commit time %q: %w", unix, err)
	}
	committed := time.Unix(secs, 0).UTC()

	// The module's root is the folder holding go.mod, which may sit below
	// the repository's root.
	sub, err := git("rev-parse", "--show-prefix")
	if err != nil {
		return "", err
	}
	files, goMod, err := archive(hash, strings.TrimSuffix(sub, "/"))
	if err != nil {
		return "", err
	}
	modPath := modfile.ModulePath(goMod)
	if modPath == "" {
		return "", errors.New("go.mod names no module")
	}
	m := module.Version{
		Path:    modPath,
		Version: module.PseudoVersion("", "", committed, hash[:12]),
	}

	escaped, err := module.EscapePath(m.Path)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(proxy, filepath.FromSlash(escaped), "@v")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	var zipped bytes.Buffer
	// Create checks what the go command checks when it downloads a zip:
	// the size limits, file names and case collisions.
	if err := modzip.Create(&zipped, m, files); err != nil {
		return "", err
	}
	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{m.Version, committed})
	if err != nil {
		return "", err
	}
	for name, data := range map[string][]byte{
		m.Version + ".zip":  zipped.Bytes(),
		m.Version + ".mod":  goMod,
		m.Version + ".info": info,
		// A proxy lists only tagged versions; a pseudo-version is found
		// through its .info, so the list stays empty.
		"list": nil,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return "", err
		}
	}
	return m.Version, nil
}

// archive returns the files of the module rooted at sub in commit hash, as
// `git archive` gives them, and its go.mod.
func archive(hash, sub string) ([]modzip.File, []byte, error) {
	cmd := exec.Command("git", "-c", "core.autocrlf=input", "-c", "core.eol=lf", "archive", "--format=zip", hash)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, nil, fmt.Errorf("git archive: %v: %s", err, stderr.Bytes())
	}
	zr, err := zip.NewReader(bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		return nil, nil, err
	}
	// git archive names files from the repository's root.
	prefix := ""
	if sub != "" {
		prefix = sub + "/"
	}
	var files []modzip.File
	var goMod []byte
	for _, f := range zr.File {
		name, ok := strings.CutPrefix(f.Name, prefix)
		if !ok || name == "" || strings.HasSuffix(name, "/") {
			continue
		}
		files = append(files, archived{name, f})
		if name == "go.mod" {
			goMod, err = readAll(f)
			if err != nil {
				return nil, nil, err
			}
		}
	}
	if goMod == nil {
		return nil, nil, fmt.Errorf("commit %s has no %s", hash, path.Join(sub, "go.mod"))
	}
	return files, goMod, nil
}

// archived is one file of the git archive, as modzip.Create reads it.
type archived struct {
	name string
	f    *zip.File
}

func (a archived) Path() string                 { return a.name }
func (a archived) Lstat() (fs.FileInfo, error)  { return a.f.FileInfo(), nil }
func (a archived) Open() (io.ReadCloser, error) { return a.f.Open() }

func readAll(f *zip.File) ([]byte, error) {
	r, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// git runs git in the current folder and returns its output, trimmed.
func git(args ...string) (string, error) {
	out, err := exec.Command("git", args...).Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(exit.Stderr))
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}
