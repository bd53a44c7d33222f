package hls

import "time"

// Segment numbers across owners.
//
// Edges keep the origins' segment numbers (a player moved between edges
// must see the same number for the same bytes), so the numbers themselves
// must never go back when a stream moves to another origin: the new owner
// has to start above everything the old owner published, without asking
// it (it may have crashed). The wall clock does that: the first segment of
// every session (a claim) is numbered
//
//	StartSeq = max(next local number, floor(now / q)),  q = Fragment / ClockDiv
//
// and later segments count up by one from there.
//
// Why it holds. Write c_X(t) for node X's clock at real time t and
// lead_X(t) = (the highest number X has opened) - c_X(t)/q.
//   - At a start the lead is at most max(old lead + 1, 0): floor(now/q) is
//     at most now/q, and the local number is one above X's last.
//   - Between starts a segment is cut only at a keyframe at least Fragment
//     of media time after the previous cut, and a live publisher's media
//     time runs at wall-clock speed (plus a burst of at most Burst segments,
//     e.g. a GOP cache replayed on connect). So the numbers grow by at most
//     1 per Fragment while c/q grows by ClockDiv per Fragment: the lead
//     falls by at least (1/q - 1/Fragment) per second of the session, and a
//     session started from the clock has lead <= Burst at its start.
//   - A new owner B claiming at real time b starts at
//     S_B >= floor(c_B(b)/q) > c_B(b)/q - 1 >= c_A(b)/q - MaxClockSkew/q - 1,
//     and every number of the old owner A is <= c_A(b)/q + lead_A(b). So
//     S_B > every number of A as soon as lead_A(b) <= -(MaxClockSkew/q + 1),
//     which a session started from the clock reaches after MinTenure.
//
// With the defaults (Fragment 2 s, so q = 125 ms; skew < 1 s; Burst 1)
// MinTenure is 1.33 s: a stream that moves again within 1.33 s of a claim
// may be numbered below the previous owner (edges then skip the overlap
// rather than go back, see edge/internal/hlsproxy). Every owner change of
// the drills (a drain, a crash and the lease or crash detection that
// follows) is far apart from the claim before it.
//
// A margin added to floor(now/q) would not help against skew: every owner
// adds the same one, so it cancels out. What absorbs the skew is the clock
// running ClockDiv times faster than the numbering; that is also why q is a
// fraction of Fragment and not Fragment itself (with q = Fragment a
// real-time publisher's numbers keep pace with the clock, and a drained
// owner's last number and its successor's first one are equal).
//
// Numbers are about 1.4e10 with the defaults (unix time in eighths of a
// second): far below 2^53 (JavaScript players) and 2^63.
const (
	// ClockDiv is Fragment / q: how much faster than the numbering the
	// clock counts.
	ClockDiv = 16
	// MaxClockSkew is the assumed bound on the clock difference between
	// two origins (NTP keeps it to milliseconds; 1 s leaves room for a
	// host whose NTP is late). It is an assumption, not enforced.
	MaxClockSkew = time.Second
	// Burst is the assumed bound on segments a publisher sends faster than
	// real time (a reconnect replaying a buffered GOP).
	Burst = 1
)

// quantum returns q for a fragment duration (at least 1 ns).
func quantum(fragment time.Duration) time.Duration {
	return max(fragment/ClockDiv, 1)
}

// StartSeq returns the number of the first segment of a session (a claim)
// given the next local number: next, or the clock's number when that is
// higher (see above). It cannot fail.
func StartSeq(next int64, now time.Time, fragment time.Duration) int64 {
	return max(next, now.UnixNano()/int64(quantum(fragment)))
}

// MinTenure is how long an owner's session, started from the clock, must
// last before its successor's StartSeq is above all of its numbers, for
// clocks within skew and bursts of at most burst segments:
// (skew + (1+burst)·q) / (1 - q/fragment).
func MinTenure(fragment, skew time.Duration, burst int) time.Duration {
	q := float64(quantum(fragment))
	return time.Duration((float64(skew) + float64(1+burst)*q) / (1 - q/float64(fragment)))
}
