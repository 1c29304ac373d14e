package admission

import (
	"fmt"
	"testing"
	"time"
)

// TestFailedTokenTableBounded: a flood of addresses cannot grow the table
// past its bound.
func TestFailedTokenTableBounded(t *testing.T) {
	old := maxFailedTokenClients
	maxFailedTokenClients = 50
	t.Cleanup(func() { maxFailedTokenClients = old })
	f := newFailedTokens()
	if err := f.setRate(Rate{N: 1, Per: time.Hour}); err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		f.failed(fmt.Sprintf("10.%d.%d.1", i/256, i%256))
		if n := len(f.clients); n > maxFailedTokenClients {
			t.Fatalf("%d clients tracked, bound %d", n, maxFailedTokenClients)
		}
	}
	if f.retryAfter("10.3.231.1") == 0 {
		t.Error("the latest client is not limited")
	}
}
