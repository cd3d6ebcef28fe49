//go:build !race

package runtime_test

import (
	"testing"
	"time"
)

// TestRemindersAtScale: 100,000 reminders over three silos each fire
// exactly as often as they come due (see runReminderLoad). It needs the
// speed of a build without the race detector: `make test` runs it in a
// second, race-free pass.
func TestRemindersAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 100,000 reminders take about 45 s")
	}
	runReminderLoad(t, 10*time.Second)
}
