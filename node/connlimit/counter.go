package connlimit

import "sync"

// Counter counts holders per key (players of a stream, publishes of a
// node) against a cap given at each Acquire, so a reloaded cap applies to
// the next holder without touching the current ones.
type Counter struct {
	mu sync.Mutex
	n  map[string]int
}

// NewCounter returns an empty Counter.
func NewCounter() *Counter { return &Counter{n: map[string]int{}} }

// Acquire takes a slot of key when fewer than max are held (max <= 0: no
// cap). It returns the release function (call it once) and true, or nil
// and false when key is at max; a refusal changes nothing.
func (c *Counter) Acquire(key string, max int) (release func(), ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if max > 0 && c.n[key] >= max {
		return nil, false
	}
	c.n[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.n[key]--; c.n[key] <= 0 {
				delete(c.n, key)
			}
		})
	}, true
}

// Count returns the slots of key held now.
func (c *Counter) Count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}
