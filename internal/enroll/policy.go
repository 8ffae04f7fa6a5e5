package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
)

// Enrollment policy: CEL expressions (https://cel.dev) that must all be true for an
// enrollment to go ahead. They come from the token (signed into it at creation, so a
// token's policy cannot be changed afterwards) and from the token's profile
// (spec.enrollPolicy, read at each enrollment). Each sees three variables:
//
//	facts    the agent's reported facts, as JSON (numbers that are integers are ints):
//	         facts.memory_mb >= 8192 && facts.dmi.vendor == "Dell Inc."
//	token    id, profile, machine, labels, macs, cidrs, boot, issuer, expires (unix s)
//	request  remote_ip, macs (the reported MACs, normalized), time (unix s)
//
// An expression that is false, or cannot be evaluated on these facts (a missing key, a
// string compared with a number), refuses the enrollment; the refusal names it. Each
// evaluation is bounded in cost and time, and a panic in the evaluator is a refusal,
// never a crash.

// Policy limits.
const (
	MaxPolicyExprs   = 16
	MaxPolicyExprLen = 2048
	maxFactsDepth    = 32
)

// PolicyError is an enrollment refused by policy, naming the expression.
type PolicyError struct {
	Source string // "token" or "profile \"p\""
	Index  int
	Expr   string
	Reason string
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("policy: %s expression %d `%s` %s", e.Source, e.Index, truncate(e.Expr, 200), e.Reason)
}

type policyEngine struct {
	env       *cel.Env
	costLimit uint64
	timeout   time.Duration

	mu    sync.Mutex
	progs map[string]cel.Program
}

func newPolicyEngine(costLimit uint64, timeout time.Duration) (*policyEngine, error) {
	env, err := cel.NewEnv(
		cel.Variable("facts", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("token", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("request", cel.MapType(cel.StringType, cel.DynType)),
		// facts.memory_mb >= 8192 holds whether the agent reported 16384 or 16384.0.
		cel.CrossTypeNumericComparisons(true),
		cel.ParserRecursionLimit(64),
		cel.ParserExpressionSizeLimit(MaxPolicyExprLen),
	)
	if err != nil {
		return nil, err
	}
	if costLimit == 0 {
		costLimit = 100_000
	}
	if timeout <= 0 {
		timeout = 100 * time.Millisecond
	}
	return &policyEngine{env: env, costLimit: costLimit, timeout: timeout, progs: map[string]cel.Program{}}, nil
}

// ValidatePolicy compiles expressions the way enrollment will, for checking them when
// they are written (on a token, or on a profile by the API).
func ValidatePolicy(exprs []string) error {
	p, err := newPolicyEngine(0, 0)
	if err != nil {
		return err
	}
	return p.validate(exprs)
}

func (p *policyEngine) validate(exprs []string) error {
	if len(exprs) > MaxPolicyExprs {
		return fmt.Errorf("policy: %d expressions, at most %d", len(exprs), MaxPolicyExprs)
	}
	for i, e := range exprs {
		if _, err := p.program(e); err != nil {
			return fmt.Errorf("policy[%d]: %w", i, err)
		}
	}
	return nil
}

func (p *policyEngine) program(expr string) (cel.Program, error) {
	p.mu.Lock()
	prg, ok := p.progs[expr]
	p.mu.Unlock()
	if ok {
		return prg, nil
	}
	if len(expr) > MaxPolicyExprLen {
		return nil, fmt.Errorf("longer than %d characters", MaxPolicyExprLen)
	}
	ast, iss := p.env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("does not compile: %v", iss.Err())
	}
	if t := ast.OutputType(); t != cel.BoolType && t != cel.DynType {
		return nil, fmt.Errorf("is of type %s, not bool", t)
	}
	prg, err := p.env.Program(ast, cel.CostLimit(p.costLimit), cel.InterruptCheckFrequency(100), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("does not compile: %v", err)
	}
	p.mu.Lock()
	if len(p.progs) >= 1024 { // bounded: expressions are operator-written, but tokens are many
		p.progs = map[string]cel.Program{}
	}
	p.progs[expr] = prg
	p.mu.Unlock()
	return prg, nil
}

// check evaluates exprs in order; the first that is not true refuses.
func (p *policyEngine) check(ctx context.Context, source string, exprs []string, vars map[string]any) (err error) {
	for i, expr := range exprs {
		if err := p.eval(ctx, source, i, expr, vars); err != nil {
			return err
		}
	}
	return nil
}

func (p *policyEngine) eval(ctx context.Context, source string, i int, expr string, vars map[string]any) (err error) {
	refuse := func(format string, a ...any) error {
		return &PolicyError{Source: source, Index: i, Expr: expr, Reason: fmt.Sprintf(format, a...)}
	}
	defer func() {
		if r := recover(); r != nil {
			err = refuse("could not be evaluated (evaluator panic: %v)", r)
		}
	}()
	prg, err := p.program(expr)
	if err != nil {
		return refuse("%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	out, _, err := prg.ContextEval(ctx, vars)
	if err != nil {
		return refuse("could not be evaluated on these facts: %v", truncate(err.Error(), 200))
	}
	if b, ok := out.(types.Bool); ok {
		if !b {
			return refuse("is false")
		}
		return nil
	}
	return refuse("returned %s, not a bool", out.Type())
}

// policyFacts converts JSON facts for CEL: integral numbers become int64 (so that
// facts.cpus == 8 holds), others float64; nesting is bounded.
func policyFacts(v any, depth int) (any, error) {
	if depth > maxFactsDepth {
		return nil, errors.New("facts are nested more than 32 levels deep")
	}
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := policyFacts(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := policyFacts(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n, nil
		}
		f, err := x.Float64()
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return x.String(), nil
		}
		return f, nil
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), nil
		}
		return x, nil
	case int:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int64:
		return x, nil
	case uint32:
		return int64(x), nil
	case float32:
		return policyFacts(float64(x), depth)
	case nil, bool, string:
		return x, nil
	case []string:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = e
		}
		return out, nil
	case map[string]string:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = e
		}
		return out, nil
	}
	return fmt.Sprint(v), nil
}
