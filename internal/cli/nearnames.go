package cli

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/api"
	"github.com/kilnhq/kiln/internal/resource"
)

// withNearNames adds "did you mean web-1?" to a not-found answer about kind k's
// object name, from the names the server has that are a typo or two away. Any other
// error, or a failure to list, returns err as it was.
func withNearNames(cmd *cobra.Command, g *globalFlags, k *resource.Kind, name string, err error) error {
	ae, ok := errors.AsType[*APIError](err)
	if !ok || ae.Code != http.StatusNotFound {
		return err
	}
	var page api.ListResponse
	if call(cmd, g, http.MethodGet, "/api/v1/"+k.Plural, url.Values{"limit": {"1000"}}, nil, &page) != nil {
		return err
	}
	// The nearest names only: web-l suggests web-1, not web-2 too.
	var near []string
	best := 3
	for _, o := range page.Items {
		n := o.Metadata.Name
		if !isNearName(name, n) {
			continue
		}
		switch d := editDistance(name, n); {
		case d < best:
			best, near = d, []string{n}
		case d == best:
			near = append(near, n)
		}
	}
	if len(near) == 0 {
		return err
	}
	slices.Sort(near)
	return &APIError{Code: ae.Code, Message: ae.Message + "; did you mean " + strings.Join(near, " or ") + "?"}
}

// isNearName: b is a or a typo away from it (edit distance at most 2, and less than
// half of a), or starts with it.
func isNearName(a, b string) bool {
	if a == b {
		return false
	}
	d := editDistance(a, b)
	return d <= 2 && (d*2 < len(a) || strings.HasPrefix(b, a))
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
