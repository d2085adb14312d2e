package daemontest

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNotifyCloseEndsABlockedReader: once a test stops reading, the
// reader blocks on a full channel, and closing the socket alone would
// leave it there; close must end it all the same.
func TestNotifyCloseEndsABlockedReader(t *testing.T) {
	n, err := listenNotify(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	// One message of cap+2 lines: the test takes one, the channel holds
	// cap, and the reader is left holding the last with nowhere to put it.
	lines := cap(n.states) + 2
	conn, err := net.Dial("unixgram", n.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := strings.Repeat("X\n", lines-1) + "X"
	if len(msg) > maxNotifyMessage {
		t.Fatalf("the message (%d bytes) would be cut to %d", len(msg), maxNotifyMessage)
	}
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	n.Wait(t, "X") // the reader has the message

	closed := make(chan struct{})
	go func() {
		n.close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(ReadyTimeout):
		t.Fatal("close did not return: the reader is still blocked on a full channel")
	}
	select {
	case <-n.exited:
	default:
		t.Fatal("close returned before the reader did")
	}
}
