package async

// Request bodies larger than memBodyLimit wait for their job, and recorded
// results larger than a piece wait to be stored, in files under a folder
// of this process's own, `caddy-processing-<pid>` in the system's
// temporary folder. A job removes its files when it ends; a
// process killed meanwhile cannot, so when async mode starts in a process
// (its first async config is provisioned) it removes every such folder
// whose process is no longer alive. A pid reused by a new process keeps
// its dead predecessor's folder until that process is gone too.

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

const bodyDirPrefix = "caddy-processing-"

// bodyDir is this process's body folder, made if missing.
func bodyDir() (string, error) {
	dir := filepath.Join(os.TempDir(), bodyDirPrefix+strconv.Itoa(os.Getpid()))
	return dir, os.MkdirAll(dir, 0o700)
}

// removeDeadBodyDirs removes the body folders of processes that are gone.
func removeDeadBodyDirs(logger *zap.Logger) {
	tmp := os.TempDir()
	entries, err := os.ReadDir(tmp)
	if err != nil {
		logger.Warn("listing the temporary folder for old async bodies", zap.Error(err))
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), bodyDirPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pid, err := strconv.Atoi(rest)
		if err != nil || pid <= 0 || strconv.Itoa(pid) != rest || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
			logger.Warn("removing the async bodies of a dead process", zap.String("folder", e.Name()), zap.Error(err))
		}
	}
}
