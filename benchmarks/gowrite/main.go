// Command cargohold-gowrite times containerd's metadata write path on the workload of
// cargohold's write benchmarks (benchmarks/test_write_bench.py), so that each figure has
// a Go anchor measured in the same run.
//
// containerd's metadata package has write benchmarks for none of these calls, so this
// program makes the calls itself, through containerd v1.7.10's own packages. It is built
// inside a containerd source tree (benchmarks/README.md, "The Go write anchor"):
//
//	<tree>/cmd/cargohold-gowrite/main.go   (a copy of this file)
//	CGO_ENABLED=0 GOFLAGS=-mod=vendor GOPROXY=off go build -o gowrite ./cmd/cargohold-gowrite
//
// Workloads (each on a fresh root under -dir, timed from the first call to the last
// commit; -runs repeats each):
//
//	unbatched  -sets N: per set a 256-byte blob (writer + commit), an image on it, a
//	           chain of 7 snapshots (Prepare + Commit each) and a container on the
//	           last one; every call its own transaction.
//	batched    the same calls, -batch sets per metadata transaction (mdb.Update with
//	           metadata.WithTransactionContext), as BenchmarkGarbageCollect builds them.
//	images     -images image creations in one metadata transaction.
//
// The output is one JSON object on stdout: {"go": version, "containerd": "v1.7.10",
// "runs": {workload: {"ops": n, "seconds": [run, ...]}}}.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/content/local"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/metadata"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/native"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

const (
	namespace        = "test"
	snapshotsPerSet  = 7
	blobSize         = 256
	imageMediaType   = "irrelevant"
	containerRuntime = "testruntime"
)

type store struct {
	root string
	bdb  *bolt.DB
	mdb  *metadata.DB
	sn   snapshots.Snapshotter
}

func open(dir string) (*store, error) {
	root, err := os.MkdirTemp(dir, "gowrite-")
	if err != nil {
		return nil, err
	}
	bdb, err := bolt.Open(filepath.Join(root, "meta.db"), 0o644, nil)
	if err != nil {
		return nil, err
	}
	sn, err := native.NewSnapshotter(filepath.Join(root, "snapshots"))
	if err != nil {
		return nil, err
	}
	cs, err := local.NewStore(filepath.Join(root, "content"))
	if err != nil {
		return nil, err
	}
	mdb := metadata.NewDB(bdb, cs, map[string]snapshots.Snapshotter{"native": sn})
	if err := mdb.Init(context.Background()); err != nil {
		return nil, err
	}
	return &store{root: root, bdb: bdb, mdb: mdb, sn: sn}, nil
}

func (s *store) close() {
	s.sn.Close()
	s.bdb.Close()
	os.RemoveAll(s.root)
}

// blobFor is set i's blob: 256 bytes of math/rand seeded with i, as containerd's
// bytesFor and cargohold's gcworkload.bytes_for give them.
func blobFor(i int) []byte {
	b := make([]byte, blobSize)
	if _, err := rand.New(rand.NewSource(int64(i))).Read(b); err != nil {
		panic(err)
	}
	return b
}

// addSet makes set i's calls in ctx (which may carry a metadata transaction).
func (s *store) addSet(ctx context.Context, i int) error {
	data := blobFor(i)
	dgst := digest.FromBytes(data)
	cs := s.mdb.ContentStore()
	w, err := cs.Writer(ctx, content.WithRef(fmt.Sprintf("ref-%d", i)),
		content.WithDescriptor(ocispec.Descriptor{Size: int64(len(data)), Digest: dgst}))
	if err != nil {
		return fmt.Errorf("writer: %w", err)
	}
	if _, err := w.Write(data); err != nil {
		w.Close()
		return fmt.Errorf("write: %w", err)
	}
	if err := w.Commit(ctx, int64(len(data)), dgst); err != nil {
		w.Close()
		return fmt.Errorf("commit blob: %w", err)
	}
	w.Close()
	image := images.Image{Name: fmt.Sprintf("image-%d", i),
		Target: ocispec.Descriptor{MediaType: imageMediaType, Digest: dgst, Size: int64(len(data))}}
	if _, err := metadata.NewImageStore(s.mdb).Create(ctx, image); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	sn := s.mdb.Snapshotter("native")
	parent := ""
	for j := 0; j < snapshotsPerSet; j++ {
		key := fmt.Sprintf("snapshot-%d-%d", i, j)
		active := key + "-active"
		if _, err := sn.Prepare(ctx, active, parent); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		if err := sn.Commit(ctx, key, active); err != nil {
			return fmt.Errorf("commit snapshot: %w", err)
		}
		parent = key
	}
	container := containers.Container{ID: fmt.Sprintf("container-%d", i), Snapshotter: "native",
		SnapshotKey: parent, Runtime: containers.RuntimeInfo{Name: containerRuntime}, Spec: &types.Any{}}
	if _, err := metadata.NewContainerStore(s.mdb).Create(ctx, container); err != nil {
		return fmt.Errorf("container: %w", err)
	}
	return nil
}

func unbatched(s *store, sets, _ int, _ int) error {
	ctx := namespaces.WithNamespace(context.Background(), namespace)
	for i := 0; i < sets; i++ {
		if err := s.addSet(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

func batched(s *store, sets, batch, _ int) error {
	base := namespaces.WithNamespace(context.Background(), namespace)
	for first := 0; first < sets; first += batch {
		last := first + batch
		if last > sets {
			last = sets
		}
		if err := s.mdb.Update(func(tx *bolt.Tx) error {
			ctx := metadata.WithTransactionContext(base, tx)
			for i := first; i < last; i++ {
				if err := s.addSet(ctx, i); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

func imageCreates(s *store, _, _, count int) error {
	base := namespaces.WithNamespace(context.Background(), namespace)
	target := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest,
		Digest: digest.FromBytes(blobFor(0)), Size: blobSize}
	return s.mdb.Update(func(tx *bolt.Tx) error {
		ctx := metadata.WithTransactionContext(base, tx)
		is := metadata.NewImageStore(s.mdb)
		for i := 0; i < count; i++ {
			if _, err := is.Create(ctx, images.Image{Name: fmt.Sprintf("image-%d", i), Target: target}); err != nil {
				return err
			}
		}
		return nil
	})
}

type result struct {
	Ops     int       `json:"ops"`
	Seconds []float64 `json:"seconds"`
}

func main() {
	dir := flag.String("dir", os.TempDir(), "directory the temporary roots are made in")
	workloads := flag.String("workloads", "unbatched,batched,images", "comma-separated workloads to time")
	sets := flag.Int("sets", 200, "sets built by the unbatched and batched workloads")
	batch := flag.Int("batch", 200, "sets per metadata transaction (batched)")
	count := flag.Int("images", 1000, "image creations in one transaction (images)")
	runs := flag.Int("runs", 3, "runs of each workload, each on a fresh root")
	flag.Parse()
	fns := map[string]func(*store, int, int, int) error{
		"unbatched": unbatched, "batched": batched, "images": imageCreates}
	ops := map[string]int{"unbatched": *sets, "batched": *sets, "images": *count}
	out := map[string]*result{}
	for _, name := range strings.Split(*workloads, ",") {
		fn, ok := fns[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown workload %q\n", name)
			os.Exit(2)
		}
		res := &result{Ops: ops[name]}
		for r := 0; r < *runs; r++ {
			s, err := open(*dir)
			if err != nil {
				fmt.Fprintf(os.Stderr, "open: %v\n", err)
				os.Exit(1)
			}
			start := time.Now()
			err = fn(s, *sets, *batch, *count)
			elapsed := time.Since(start).Seconds()
			s.close()
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
				os.Exit(1)
			}
			res.Seconds = append(res.Seconds, elapsed)
		}
		out[name] = res
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(map[string]interface{}{"go": runtime.Version(), "containerd": "v1.7.10", "runs": out}); err != nil {
		os.Exit(1)
	}
}
