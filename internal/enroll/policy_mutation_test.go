package enroll

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPolicyTimeoutSettings: a zero timeout is the 100 ms default, a timeout given
// is the one used. CEL checks the deadline every 100 iterations of a
// comprehension, so only an expression that iterates can tell them apart: over 300
// facts it completes within the default and is refused under a timeout that has
// passed before the evaluation starts.
func TestPolicyTimeoutSettings(t *testing.T) {
	list := make([]any, 300)
	for i := range list {
		list[i] = int64(i)
	}
	vars := map[string]any{"facts": map[string]any{"list": list}, "token": map[string]any{}, "request": map[string]any{}}
	expr := []string{`facts.list.all(x, x >= 0)`}

	def, err := newPolicyEngine(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if def.timeout != 100*time.Millisecond {
		t.Errorf("default timeout %v, want 100ms", def.timeout)
	}
	if err := def.check(context.Background(), "token", expr, vars); err != nil {
		t.Errorf("default timeout: a 300-element comprehension refused: %v", err)
	}

	short, err := newPolicyEngine(0, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := short.check(context.Background(), "token", expr, vars); err == nil || !strings.Contains(err.Error(), "could not be evaluated") {
		t.Errorf("a 1 ns timeout: %v, want the evaluation interrupted", err)
	}
}

// TestValidatePolicyCount: MaxPolicyExprs expressions are accepted, one more is
// refused naming the count.
func TestValidatePolicyCount(t *testing.T) {
	exprs := make([]string, MaxPolicyExprs+1)
	for i := range exprs {
		exprs[i] = "true"
	}
	if err := ValidatePolicy(exprs[:MaxPolicyExprs]); err != nil {
		t.Errorf("%d expressions: %v", MaxPolicyExprs, err)
	}
	err := ValidatePolicy(exprs)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d expressions, at most %d", MaxPolicyExprs+1, MaxPolicyExprs)) {
		t.Errorf("%d expressions: %v, want refused", len(exprs), err)
	}
}

// TestPolicyExprLength: an expression of MaxPolicyExprLen characters compiles, one
// character more is refused naming the limit.
func TestPolicyExprLength(t *testing.T) {
	at := "true" + strings.Repeat(" ", MaxPolicyExprLen-4)
	if err := ValidatePolicy([]string{at}); err != nil {
		t.Errorf("an expression of %d characters: %v", len(at), err)
	}
	err := ValidatePolicy([]string{at + " "})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("longer than %d characters", MaxPolicyExprLen)) {
		t.Errorf("an expression of %d characters: %v, want refused", len(at)+1, err)
	}
}

// TestPolicyProgramCache: compiled programs are kept, up to 1024; the 1025th
// starts a new cache.
func TestPolicyProgramCache(t *testing.T) {
	p, err := newPolicyEngine(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1024 {
		if _, err := p.program(fmt.Sprintf("facts.n == %d", i)); err != nil {
			t.Fatal(err)
		}
		if len(p.progs) != i+1 {
			t.Fatalf("after %d programs the cache holds %d", i+1, len(p.progs))
		}
	}
	if _, err := p.program("facts.n == 0"); err != nil || len(p.progs) != 1024 {
		t.Fatalf("a cached program compiled again: %v, cache %d", err, len(p.progs))
	}
	if _, err := p.program("facts.n == 1024"); err != nil {
		t.Fatal(err)
	}
	if len(p.progs) != 1 {
		t.Errorf("the 1025th program: cache holds %d, want a new cache of 1", len(p.progs))
	}
}

// TestPolicyFactsDepth: facts nested maxFactsDepth levels are converted, one level
// more is refused.
func TestPolicyFactsDepth(t *testing.T) {
	nest := func(levels int) map[string]any {
		top := map[string]any{}
		cur := top
		for range levels {
			n := map[string]any{}
			cur["x"] = n
			cur = n
		}
		return top
	}
	if _, err := policyFacts(nest(maxFactsDepth), 0); err != nil {
		t.Errorf("facts nested %d levels: %v", maxFactsDepth, err)
	}
	if _, err := policyFacts(nest(maxFactsDepth+1), 0); err == nil {
		t.Errorf("facts nested %d levels accepted", maxFactsDepth+1)
	}
}
