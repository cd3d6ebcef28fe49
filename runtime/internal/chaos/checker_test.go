package chaos

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// TestChecker runs the register model on small histories whose answer is
// known, including the shapes the fault-injection test must catch.
func TestChecker(t *testing.T) {
	put := func(client int, key string, v, call, ret int64, ok bool) op {
		return op{Client: client, Key: key, Kind: opPut, Value: v, Call: call, Return: ret, OK: ok}
	}
	get := func(client int, key string, v, call, ret int64) op {
		return op{Client: client, Key: key, Kind: opGet, Value: v, Call: call, Return: ret, OK: true}
	}
	failedGet := op{Client: 3, Key: "a", Kind: opGet, Value: 99, Call: 1, Return: 100}
	for _, tc := range []struct {
		name string
		ops  []op
		want porcupine.CheckResult
	}{
		{"sequential", []op{put(0, "a", 1, 0, 1, true), get(1, "a", 1, 2, 3), put(0, "a", 2, 4, 5, true), get(1, "a", 2, 6, 7)}, porcupine.Ok},
		{"never written reads 0", []op{get(0, "a", 0, 0, 1), put(0, "a", 1, 2, 3, true)}, porcupine.Ok},
		{"concurrent read sees either", []op{put(0, "a", 1, 0, 1, true), put(0, "a", 2, 2, 6, true), get(1, "a", 1, 3, 4), get(2, "a", 2, 5, 7)}, porcupine.Ok},
		// A zombie: after put 2 was acknowledged, a read returns 1.
		{"stale read", []op{put(0, "a", 1, 0, 1, true), put(0, "a", 2, 2, 3, true), get(1, "a", 1, 4, 5)}, porcupine.Illegal},
		// A lost write: the final read does not see an acknowledged put.
		{"lost acknowledged write", []op{put(0, "a", 1, 0, 1, true), put(0, "a", 2, 2, 3, true), get(9, "a", 1, 10, 11)}, porcupine.Illegal},
		{"unknown write seen later", []op{put(0, "a", 1, 0, 1, true), put(0, "a", 2, 2, 3, false), get(1, "a", 2, 8, 9)}, porcupine.Ok},
		{"unknown write never seen", []op{put(0, "a", 1, 0, 1, true), put(0, "a", 2, 2, 3, false), get(1, "a", 1, 8, 9)}, porcupine.Ok},
		// A failed write that stayed visible and then vanished (finding 6
		// of issue 9 with write-through): seen, then the older value.
		{"unknown write seen then undone", []op{put(0, "a", 1, 0, 1, true), put(0, "a", 2, 2, 3, false), get(1, "a", 2, 4, 5), get(1, "a", 1, 6, 7)}, porcupine.Illegal},
		{"failed reads are dropped", []op{put(0, "a", 1, 0, 1, true), failedGet, get(1, "a", 1, 2, 3)}, porcupine.Ok},
		// Keys are independent registers.
		{"keys partition", []op{put(0, "a", 1, 0, 1, true), put(0, "b", 2, 2, 3, true), get(1, "a", 1, 4, 5), get(1, "b", 2, 4, 5)}, porcupine.Ok},
		{"one bad key", []op{put(0, "a", 1, 0, 1, true), put(0, "b", 2, 2, 3, true), get(1, "a", 1, 4, 5), get(1, "b", 0, 4, 5)}, porcupine.Illegal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := check(t.TempDir(), tc.ops, nil, 0, false)
			if err != nil {
				t.Fatal(err)
			}
			if res.result != tc.want {
				t.Errorf("check = %s, want %s", res.result, tc.want)
			}
		})
	}
}
