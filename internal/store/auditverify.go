package store

import (
	"context"

	"github.com/kilnhq/kiln/internal/audit"
)

// AuditKeyer is implemented by stores that key their audit chain: from the call
// on, entries are sealed with chain (a checkpoint entry marks where), and the head
// is anchored in chain's head file after every commit that appended.
type AuditKeyer interface {
	KeyAuditChain(ctx context.Context, chain *audit.Chain) error
}

// AuditVerification is the result of walking the audit chain.
type AuditVerification struct {
	OK       bool   `json:"ok"`
	Entries  int64  `json:"entries"`
	Head     string `json:"head,omitempty"`
	Anchored int64  `json:"anchored,omitempty"` // sequence of the anchored head, if any
	Error    string `json:"error,omitempty"`
}

// VerifyAudit walks the whole audit chain in pages, in one snapshot, against the
// head the database records and, when chain is not nil, the head anchored outside
// it. A broken chain is reported in the result; err is for a store that failed.
func VerifyAudit(ctx context.Context, st Store, chain *audit.Chain) (AuditVerification, error) {
	v := audit.Verifier{Chain: chain}
	var res AuditVerification
	if chain != nil {
		head, ok, err := chain.ReadHead()
		if err != nil {
			res.Error = err.Error()
			return res, nil
		}
		if ok {
			v.Anchor, res.Anchored = &head, head.Seq
		}
	}
	err := st.View(ctx, func(tx Tx) error {
		headSeq, headHash, err := tx.AuditHead(ctx)
		if err != nil {
			return err
		}
		if err := resumeAfterRetention(ctx, tx, &v); err != nil {
			return err
		}
		var after int64
		for {
			page, err := tx.ListAudit(ctx, after, 5000)
			if err != nil {
				return err
			}
			for i := range page {
				if err := v.Next(&page[i]); err != nil {
					res.Error = err.Error()
					return nil
				}
			}
			if len(page) == 0 {
				break
			}
			after = page[len(page)-1].Seq
		}
		if err := v.Finish(headSeq, headHash); err != nil {
			res.Error = err.Error()
			return nil
		}
		res.OK, res.Head = true, headHash
		return nil
	})
	res.Entries = v.Count()
	return res, err
}

// resumeAfterRetention starts v after the entries audit retention removed, at the
// point a retention checkpoint recorded for them. Without such a checkpoint v starts
// at entry 1, and a chain that starts later fails as entries removed.
func resumeAfterRetention(ctx context.Context, tx Tx, v *audit.Verifier) error {
	first, err := tx.ListAudit(ctx, 0, 1)
	if err != nil || len(first) == 0 || first[0].Seq == 1 {
		return err
	}
	cps, err := tx.ListAuditFor(ctx, audit.CheckpointKind, audit.RetentionName, first[0].Seq-1, 0)
	if err != nil {
		return err
	}
	for i := range cps {
		if !audit.IsRetention(&cps[i]) {
			continue
		}
		seq, hash, keyedFrom, err := audit.RetentionPoint(&cps[i])
		if err == nil && seq == first[0].Seq-1 && hash == first[0].PrevHash {
			v.Resume(seq, hash, keyedFrom > 0 && seq >= keyedFrom)
			return nil
		}
	}
	return nil
}
