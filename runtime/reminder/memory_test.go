package reminder_test

import (
	"testing"

	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/reminder/remindertest"
)

func TestMemoryConformance(t *testing.T) {
	remindertest.Run(t, func(*testing.T) reminder.Table { return reminder.NewMemory() })
}

func TestMemoryZeroValueConformance(t *testing.T) {
	remindertest.Run(t, func(*testing.T) reminder.Table { return new(reminder.Memory) })
}

func BenchmarkMemory(b *testing.B) {
	remindertest.Bench(b, func(*testing.B) reminder.Table { return reminder.NewMemory() })
}
