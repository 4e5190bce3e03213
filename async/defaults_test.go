package async

import (
	"testing"
	"time"
)

// TestDefaultsAreTheDocumented checks the defaults that provisioning fills
// in against the ones the README and the field docs state.
func TestDefaultsAreTheDocumented(t *testing.T) {
	// The defaults, as provisioning fills them in.
	var a Config
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	a.wait, a.keep, a.refresh = durationOr(a.Wait, defaultAsyncWait), durationOr(a.Keep, defaultAsyncKeep), durationOr(a.Refresh, defaultAsyncRefresh)
	if a.wait != 2*time.Second || a.keep != time.Hour || a.refresh != 5*time.Second ||
		defaultAsyncMaxBody != 16<<20 || defaultAsyncMaxResult != 64<<20 || defaultAsyncMaxJobs != 1000 ||
		defaultAsyncMaxStored != 1<<30 || defaultAsyncTimeout != time.Hour || defaultAsyncMonitor != "/.well-known/processing/jobs" ||
		defaultAsyncUploadTimeout != time.Minute {
		t.Errorf("defaults differ from the README's")
	}
}
