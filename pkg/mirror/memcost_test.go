package mirror

import "testing"

// TestMemCacheChargesBookkeeping: each copy is charged its bytes and
// memEntryCost, so that copies of tiny manifests, where the bookkeeping
// outweighs the bytes, still hold no more than the budget.
func TestMemCacheChargesBookkeeping(t *testing.T) {
	const budget, size = 64 << 10, 16
	m := newMemCache(budget)
	for i := range 1000 {
		b, d := randomBody(uint64(i), size)
		m.put(d, b)
	}
	want := budget / (size + memEntryCost)
	if n, used := m.usage(); n != want || used != int64(n)*(size+memEntryCost) {
		t.Errorf("%d copies of %d bytes charged %d bytes; want %d copies in the budget of %d", n, size, used, want, budget)
	}
}
