package async

// max_stored for the whole cluster: one counter record in the shared
// storage, changed only under its own lock, holds the bytes of results
// that succeeded jobs keep. A job reserves its result's size before it
// writes the result and gives it back if the job loses its transition;
// DELETE and the sweep give back what they delete. Every instance sharing
// the storage reads and writes the same counter.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/caddyserver/certmagic"
)

const (
	storedKey  = "processing/stored.json"
	storedLock = "processing/stored"
)

type storedTotal struct {
	Bytes int64 `json:"bytes"`
}

// loadStored reads the cluster's stored result bytes; none stored is 0.
func loadStored(ctx context.Context, storage certmagic.Storage) (int64, error) {
	b, err := storage.Load(ctx, storedKey)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var t storedTotal
	if err := json.Unmarshal(b, &t); err != nil {
		return 0, fmt.Errorf("%s: %w", storedKey, err)
	}
	return t.Bytes, nil
}

// changeStored adds delta under the counter's lock; with a positive delta
// it adds nothing and returns false if the total would pass limit. The
// total never goes below zero.
func changeStored(ctx context.Context, storage certmagic.Storage, delta, limit int64) (bool, error) {
	lctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	if err := storage.Lock(lctx, storedLock); err != nil {
		return false, fmt.Errorf("locking %s: %w", storedLock, err)
	}
	defer func() { _ = storage.Unlock(context.WithoutCancel(ctx), storedLock) }()
	cur, err := loadStored(ctx, storage)
	if err != nil {
		return false, err
	}
	if delta > 0 && cur+delta > limit {
		return false, nil
	}
	b, _ := json.Marshal(storedTotal{Bytes: max(cur+delta, 0)})
	return true, storage.Store(ctx, storedKey, b)
}

// reserveStored takes n bytes of max_stored if they fit under limit.
func reserveStored(ctx context.Context, storage certmagic.Storage, n, limit int64) (bool, error) {
	return changeStored(ctx, storage, n, limit)
}

// releaseStored gives back n bytes.
func releaseStored(ctx context.Context, storage certmagic.Storage, n int64) error {
	_, err := changeStored(ctx, storage, -n, 0)
	return err
}

// storedWait bounds the read of the counter when a job is submitted.
const storedWait = 10 * time.Second
