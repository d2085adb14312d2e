package daemon

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxConnections bounds the connections each listener serves at
// once; the next ones wait in the kernel's accept queue until one closes.
// containerd opens a few connections per image it pulls (three layers at
// a time), and each peer node a few: a busy node needs tens. 512 leaves
// ample room, while connections that hold a file, a fill reader and an
// upstream connection each stay well below the daemon's file limit.
const DefaultMaxConnections = 512

// writeProgressTimeout is how long one write to a client may wait for the
// client to take bytes. A whole-response WriteTimeout would cut a long
// blob download that is making progress; this cuts only a client that
// stopped reading: a minute with its receive window shut.
const writeProgressTimeout = time.Minute

// sendfileChunk is what one deadline covers when a file goes out by
// sendfile, which writes a whole file in one call: a client must take
// 1 MiB a minute (about 17 KiB/s) to keep its connection. Each chunk is
// one more sendfile call and a little garbage; at 256 KiB, 64 clients of
// a 256 MiB blob raised the daemon's peak RSS by 5 MiB, at 1 MiB by 2.
const sendfileChunk = 1 << 20

// boundedListener caps the connections served at once and gives each a
// write progress deadline. It is written here rather than taken from
// golang.org/x/net/netutil.LimitListener, whose connection type hides
// *net.TCPConn's ReadFrom and so turns sendfile off.
type boundedListener struct {
	net.Listener
	slots    chan struct{} // one per connection open; nil: no cap
	progress time.Duration // per write; 0: no deadline
	onFull   func()        // test hook: Accept waits for a slot
	done     chan struct{} // closed by Close
	stop     sync.Once
}

func newBoundedListener(l net.Listener, maxConns int, progress time.Duration) *boundedListener {
	b := &boundedListener{Listener: l, progress: progress, done: make(chan struct{})}
	if maxConns > 0 {
		b.slots = make(chan struct{}, maxConns)
	}
	return b
}

// Accept waits for a free slot, then for a connection.
func (l *boundedListener) Accept() (net.Conn, error) {
	if l.slots != nil {
		select {
		case l.slots <- struct{}{}:
		default:
			if l.onFull != nil {
				l.onFull()
			}
			select {
			case l.slots <- struct{}{}:
			case <-l.done:
				return nil, net.ErrClosed
			}
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		l.release()
		return nil, err
	}
	return &boundedConn{Conn: c, progress: l.progress, release: sync.OnceFunc(l.release)}, nil
}

func (l *boundedListener) release() {
	if l.slots != nil {
		<-l.slots
	}
}

// Close stops Accept, including one waiting for a slot.
func (l *boundedListener) Close() error {
	l.stop.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// progressSlackDivisor sets how stale a write deadline may be before a
// write moves it: by progress/progressSlackDivisor, a second of a
// minute. Moving a deadline moves a runtime timer, and doing it on every
// write was 1.6% of a cached manifest's cost; now a connection moves it
// at most once a second, and each write still has at least 59/60 of
// the progress timeout.
const progressSlackDivisor = 60

// monoBase is the origin of boundedConn's deadlines, so that they are
// kept on the monotonic clock: a wall clock set back must not make a
// connection keep a deadline that is about to pass.
var monoBase = time.Now()

// boundedConn is a connection of a boundedListener: each write must make
// progress within its deadline, and Close frees its slot.
type boundedConn struct {
	net.Conn
	progress time.Duration
	release  func()
	deadline atomic.Int64 // the write deadline set last, as time since monoBase; 0: none
}

func (c *boundedConn) extend() {
	if c.progress <= 0 {
		return
	}
	now := time.Now()
	d := now.Sub(monoBase) + c.progress
	if last := time.Duration(c.deadline.Load()); last != 0 && d-last < c.progress/progressSlackDivisor {
		return
	}
	c.deadline.Store(int64(d))
	_ = c.Conn.SetWriteDeadline(now.Add(c.progress))
}

func (c *boundedConn) Write(p []byte) (int, error) {
	c.extend()
	return c.Conn.Write(p)
}

// ReadFrom keeps sendfile: net/http hands a file to the connection's
// ReadFrom, which a wrapper would otherwise hide. The file goes out in
// chunks of sendfileChunk, each with its own deadline; each chunk is still
// an *io.LimitedReader of the file, which *net.TCPConn sends by sendfile.
func (c *boundedConn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	src, left := r, int64(-1)
	if lr, ok := r.(*io.LimitedReader); ok {
		src, left = lr.R, lr.N
	}
	if _, file := src.(*os.File); !ok || !file {
		// Not sendfile: one copy whose every Write extends the deadline.
		// Chunking it would cost a new copy buffer per chunk.
		return io.Copy(writerOnly{c}, r)
	}
	if lr, ok := r.(*io.LimitedReader); ok {
		defer func() { lr.N = left }()
	}
	var total int64
	for left != 0 {
		want := int64(sendfileChunk)
		if left > 0 {
			want = min(want, left)
		}
		c.extend()
		n, err := rf.ReadFrom(&io.LimitedReader{R: src, N: want})
		total += n
		if left > 0 {
			left -= n
		}
		if err != nil || n < want {
			return total, err // an error, or the end of src
		}
	}
	return total, nil
}

// CloseWrite passes through to the connection, for net/http's graceful
// close.
func (c *boundedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *boundedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// writerOnly hides a writer's ReadFrom, so io.Copy does not call it back.
type writerOnly struct{ io.Writer }
