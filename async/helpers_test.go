package async_test

import (
	"sync/atomic"
	"time"
)

// atomicDuration is a delay a test changes while Caddy's handlers read it.
type atomicDuration struct{ v atomic.Int64 }

func (d *atomicDuration) get() time.Duration  { return time.Duration(d.v.Load()) }
func (d *atomicDuration) set(v time.Duration) { d.v.Store(int64(v)) }
