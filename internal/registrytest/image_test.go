package registrytest

import (
	"bytes"
	"compress/flate"
	"testing"
)

func TestRandom(t *testing.T) {
	a, b, c := Random(1, 1<<16), Random(1, 1<<16), Random(2, 1<<16)
	if len(a) != 1<<16 || !bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Fatal("Random is not deterministic per seed")
	}
	var z bytes.Buffer
	fw, _ := flate.NewWriter(&z, flate.BestSpeed)
	_, _ = fw.Write(a)
	_ = fw.Close()
	if z.Len() < len(a) {
		t.Errorf("Random compresses from %d to %d bytes", len(a), z.Len())
	}
}

func TestPushImageIsDeterministic(t *testing.T) {
	reg := Start(t)
	a := reg.PushImage(t, "app", "v1", 1000)
	b := reg.PushImage(t, "app", "v1", 1000)
	c := reg.PushImage(t, "app", "v2", 1000)
	if a.Index != b.Index || a.Index == c.Index {
		t.Errorf("indexes %v, %v, %v: want equal for equal tags only", a.Index, b.Index, c.Index)
	}
	if a.Layers["linux/amd64"][0] == a.Layers["linux/arm64"][0] {
		t.Error("platforms share a layer")
	}
}

func BenchmarkPushBlob32MiB(b *testing.B) {
	reg := Start(b)
	data := Random(1, 32<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		reg.PushBlob(b, "app", data)
	}
}

func BenchmarkPushImage(b *testing.B) {
	reg := Start(b)
	b.SetBytes(2 * (16<<20 + 1<<20))
	for b.Loop() {
		reg.PushImage(b, "app", "v1", 16<<20, 1<<20)
	}
}
