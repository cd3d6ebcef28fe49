package cluster

import "time"

// retryBase is the first pause after a failed keepalive; it doubles per
// consecutive failure, up to half the keepalive interval, and never runs
// past the fence deadline.
const retryBase = 50 * time.Millisecond

// keeper is the goroutine-free core of lease keepalive and self-fencing,
// driven by explicit inputs (a keepalive sent at t succeeded with TTL; one
// failed at t) and answering when to send the next keepalive, how long it
// may take, and when the silo must consider itself fenced.
//
// The fence deadline is the send time of the last successful keepalive (or
// of the lease grant) plus the TTL etcd answered, minus the margin. etcd
// renews the lease when it processes the request, after it was sent, so
// with clocks advancing at the same rate etcd cannot expire the lease
// before deadline+margin. Times carry Go's monotonic clock reading, so
// wall-clock steps do not move the deadline.
type keeper struct {
	margin   time.Duration
	ttl      time.Duration // as granted or last renewed by etcd
	deadline time.Time     // fence deadline
	next     time.Time     // when to send the next keepalive
	failures int           // consecutive failed keepalives
}

// newKeeper starts from a lease grant sent at sent that etcd answered with
// ttl.
func newKeeper(sent time.Time, ttl, margin time.Duration) *keeper {
	k := &keeper{margin: margin}
	k.renewed(sent, ttl)
	return k
}

// interval is the pause between successful keepalives: TTL/3.
func (k *keeper) interval() time.Duration { return k.ttl / 3 }

// renewed records a keepalive sent at sent that etcd answered with ttl.
func (k *keeper) renewed(sent time.Time, ttl time.Duration) {
	k.ttl = ttl
	if d := sent.Add(ttl - k.margin + brokenFencingSlack); d.After(k.deadline) {
		k.deadline = d
	}
	k.next = sent.Add(k.interval())
	k.failures = 0
}

// failed records a keepalive that failed at now and schedules a retry.
func (k *keeper) failed(now time.Time) {
	k.failures++
	backoff := k.interval() / 2
	if k.failures < 16 {
		backoff = min(backoff, retryBase<<(k.failures-1))
	}
	k.next = now.Add(backoff)
	if k.next.After(k.deadline) {
		k.next = k.deadline
	}
}

// attemptDeadline bounds a keepalive sent at sent: one interval, and
// never past the fence deadline, where waiting longer is pointless.
func (k *keeper) attemptDeadline(sent time.Time) time.Time {
	d := sent.Add(k.interval())
	if d.After(k.deadline) {
		return k.deadline
	}
	return d
}

// expired reports whether now is at or past the fence deadline.
func (k *keeper) expired(now time.Time) bool { return !now.Before(k.deadline) }
