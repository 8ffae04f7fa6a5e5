package power

import (
	"context"
	"sync"
)

// jobCredentials holds the BMC credentials one power job has read. Every read of a
// credentials secret is an audited release, and a job makes a driver per attempt:
// without it, one job's retries would write one audit entry per attempt for what
// an operator sees as one use of the credential.
type jobCredentials struct {
	mu     sync.Mutex
	byName map[string][2]string
}

type jobCredentialsKey struct{}

// withJobCredentials gives ctx (one job's) a place to keep the credentials it read.
func withJobCredentials(ctx context.Context) context.Context {
	return context.WithValue(ctx, jobCredentialsKey{}, &jobCredentials{byName: map[string][2]string{}})
}

// cachedCredentials reads secretName's credentials once per job context; outside a
// job (a driver made directly) every call reads them.
func cachedCredentials(ctx context.Context, creds Credentials, secretName string) (string, string, error) {
	jc, ok := ctx.Value(jobCredentialsKey{}).(*jobCredentials)
	if !ok {
		return creds.BMCCredentials(ctx, secretName)
	}
	jc.mu.Lock()
	defer jc.mu.Unlock()
	if c, ok := jc.byName[secretName]; ok {
		return c[0], c[1], nil
	}
	user, password, err := creds.BMCCredentials(ctx, secretName)
	if err != nil {
		return "", "", err // not kept: a later attempt reads again
	}
	jc.byName[secretName] = [2]string{user, password}
	return user, password, nil
}
