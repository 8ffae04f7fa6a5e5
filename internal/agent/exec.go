package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// execAction runs a command in the agent environment, its output captured line by
// line into the action's log. Arguments:
//
//	command  a shell command line, run with /bin/sh -c; or
//	args     the argv list, run without a shell
//	env      map of extra environment variables
//	dir      working directory
//	timeout  a limit shorter than the action's own
//
// A non-zero exit fails the action, with the exit status and the last output line.
func execAction(ctx context.Context, env *Env, args Args) error {
	command, err := args.String("command")
	if err != nil {
		return permanent(err)
	}
	argv, err := args.Strings("args")
	if err != nil {
		return permanent(err)
	}
	if argv == nil {
		if argv, err = args.Strings("argv"); err != nil {
			return permanent(err)
		}
	}
	switch {
	case command != "" && len(argv) > 0:
		return permanent(errors.New("args: give command (a shell line) or args (a list), not both"))
	case command != "":
		sh := env.Shell
		if sh == "" {
			sh = "/bin/sh"
		}
		argv = []string{sh, "-c", command}
	case len(argv) == 0 || argv[0] == "":
		return permanent(errors.New("args.command: required (or args, a list)"))
	}
	var vars map[string]any
	if args.Has("env") {
		if err := args.Decode("env", &vars); err != nil {
			return permanent(err)
		}
	}
	dir, err := args.String("dir")
	if err != nil {
		return permanent(err)
	}
	if limit, err := args.Duration("timeout", 0); err != nil {
		return permanent(err)
	} else if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, limit, fmt.Errorf("args.timeout %s exceeded", limit))
		defer cancel()
	}

	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%v", k, vars[k]))
	}
	// The whole process group is killed on timeout, not just the shell: a pipeline's
	// other members would otherwise keep the output pipe open and the action hanging.
	killGroupOnCancel(cmd)
	cmd.WaitDelay = 5 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.Stdin = nil
	var last string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			env.Logf("%s", line)
			if strings.TrimSpace(line) != "" {
				last = line
			}
		}
		io.Copy(io.Discard, pr)
	}()
	env.Logf("$ %s", strings.Join(argv, " "))
	start := time.Now()
	err = cmd.Start()
	if err == nil {
		err = cmd.Wait()
	}
	pw.Close()
	wg.Wait()
	if err != nil {
		if cause := context.Cause(ctx); ctx.Err() != nil && cause != nil {
			err = fmt.Errorf("%w (killed: %v)", err, cause)
		}
		if last != "" {
			return fmt.Errorf("%s: %w; last output: %s", argv[0], err, truncateLine(last))
		}
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	env.SetMessage("exit status 0 after %s", time.Since(start).Round(time.Millisecond))
	return nil
}
