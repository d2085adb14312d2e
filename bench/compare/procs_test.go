//go:build benchcompare

package compare

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// readyTimeout bounds the wait for a contender to answer after its
	// start; the start-up workload's 200,000 entries stay well within it.
	readyTimeout = 60 * time.Second
	// stopTimeout is how long a contender gets to exit after SIGTERM
	// before its process group is killed.
	stopTimeout = 15 * time.Second
	// readyPoll is the pause between readiness probes, small against the
	// start-up times measured.
	readyPoll = 2 * time.Millisecond
)

// proc is a contender's process, in a process group of its own (nginx's
// master and workers), stopped by its PID.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // where its stdout and stderr go
	done chan struct{}
	err  error // Wait's; read after done
}

// startProc starts argv with its output appended to logPath.
func startProc(name, logPath string, argv ...string) (*proc, error) {
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	p := &proc{name: name, log: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	// Its own group, so that nginx's workers stop with it; killed by the
	// kernel should this test process die without stopping it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM to the process group, and SIGKILL if it has not
// exited within stopTimeout.
func (p *proc) stop() {
	if p == nil {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Workers left behind by a master that exited first.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// waitHTTP polls url until it answers with a status below 500, the
// process exits or readyTimeout passes.
func (p *proc) waitHTTP(url string) error {
	return p.poll(url, func(resp *http.Response) error {
		if resp.StatusCode >= 500 {
			return fmt.Errorf("not ready at %s: status %d", url, resp.StatusCode)
		}
		return nil
	})
}

// waitMetric polls url (a /metrics page) until a line of it is line.
func (p *proc) waitMetric(url, line string) error {
	return p.poll(url, func(resp *http.Response) error {
		b, err := io.ReadAll(resp.Body)
		if err != nil || !slices.Contains(strings.Split(string(b), "\n"), line) {
			return fmt.Errorf("no %q at %s", line, url)
		}
		return nil
	})
}

// poll GETs url until check accepts the answer, the process exits or
// readyTimeout passes.
func (p *proc) poll(url string, check func(*http.Response) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			err = check(resp)
			resp.Body.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v); see %s:%s", p.name, p.err, p.log, tail(p.log))
		case <-ctx.Done():
			return fmt.Errorf("%s: %v; see %s", p.name, err, p.log)
		case <-time.After(readyPoll):
		}
	}
}

// tail returns the end of a log file, for errors.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return "\n" + string(b)
}

// freeAddr returns ip:port with a port that was free a moment ago.
func freeAddr(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("find a free port on %s: %v", ip, err)
	}
	defer l.Close()
	return l.Addr().String()
}

// fresh empties dir (a cache's data), keeping the directory.
func fresh(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o755)
}

// render writes the template file name, with each {{key}} replaced, to
// dir and returns its path.
func render(name, dir string, vars map[string]string) (string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	s := string(b)
	for k, v := range vars {
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	if i := strings.Index(s, "{{"); i >= 0 {
		return "", errors.New(name + ": no value for " + s[i:min(len(s), i+30)])
	}
	out := filepath.Join(dir, name)
	return out, os.WriteFile(out, []byte(s), 0o644)
}
