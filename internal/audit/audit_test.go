package audit

import (
	"strings"
	"testing"
	"time"
)

func chain(n int) []Entry {
	var out []Entry
	var seq int64
	prev := ""
	for i := 0; i < n; i++ {
		e := Entry{Time: time.Unix(int64(1000+i), 0), Actor: "token:a", Action: "create", Kind: "Machine", Name: "m" + string(rune('a'+i)), Summary: "created"}
		Seal(&e, seq, prev)
		seq, prev = e.Seq, e.Hash
		out = append(out, e)
	}
	return out
}

func verify(entries []Entry, headSeq int64, headHash string) error {
	var v Verifier
	for i := range entries {
		if err := v.Next(&entries[i]); err != nil {
			return err
		}
	}
	return v.Finish(headSeq, headHash)
}

func TestVerifier(t *testing.T) {
	good := chain(5)
	head := good[4]
	if err := verify(good, head.Seq, head.Hash); err != nil {
		t.Fatalf("intact chain: %v", err)
	}
	cases := []struct {
		name   string
		mutate func([]Entry) []Entry
		want   string
	}{
		{"edited summary", func(e []Entry) []Entry { e[2].Summary = "deleted"; return e }, "entry 3: hash mismatch"},
		{"edited time", func(e []Entry) []Entry { e[1].Time = e[1].Time.Add(time.Second); return e }, "entry 2: hash mismatch"},
		{"deleted middle", func(e []Entry) []Entry { return append(e[:2], e[3:]...) }, "expected sequence 3"},
		{"deleted newest", func(e []Entry) []Entry { return e[:4] }, "entries were removed"},
		{"reordered", func(e []Entry) []Entry {
			e[1], e[2] = e[2], e[1]
			e[1].Seq, e[2].Seq = 2, 3
			return e
		}, "chain was broken"},
		{"rehashed edit", func(e []Entry) []Entry { e[2].Summary = "x"; e[2].Hash = ComputeHash(&e[2]); return e }, "entry 4: previous-hash does not match"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			entries := c.mutate(append([]Entry(nil), good...))
			err := verify(entries, head.Seq, head.Hash)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}
