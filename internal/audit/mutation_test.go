package audit

import (
	"strings"
	"testing"
)

// TestVerifierHead: the recorded head is checked by sequence and, once there are
// entries, by hash; an empty chain matches an empty head whichever way the store
// spells its hash; Count is the number of entries verified.
func TestVerifierHead(t *testing.T) {
	good := chain(3)
	cases := []struct {
		name     string
		entries  []Entry
		headSeq  int64
		headHash string
		want     string // "" when the chain verifies
		count    int64
	}{
		{"intact", good, 3, good[2].Hash, "", 3},
		{"head hash of another chain", good, 3, chain(4)[3].Hash, "entries were removed or added", 3},
		{"head hash of an earlier entry", good, 3, good[1].Hash, "entries were removed or added", 3},
		{"empty chain, empty head", nil, 0, "", "", 0},
		{"empty chain, genesis head", nil, 0, GenesisHash, "", 0},
		{"empty chain, head ahead", nil, 1, good[0].Hash, "recorded head is entry 1", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var v Verifier
			for i := range c.entries {
				if err := v.Next(&c.entries[i]); err != nil {
					t.Fatalf("entry %d: %v", i, err)
				}
			}
			err := v.Finish(c.headSeq, c.headHash)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("Finish: %v, want nil", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("Finish: %v, want %q", err, c.want)
			}
			if got := v.Count(); got != c.count {
				t.Errorf("Count %d, want %d", got, c.count)
			}
		})
	}
}
