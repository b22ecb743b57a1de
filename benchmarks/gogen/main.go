// Command gogen writes a containerd 1.x root holding the workload of containerd's
// BenchmarkGarbageCollect (metadata/db_test.go, v1.7.10) at N sets, so that
// cargohold can be measured on containerd's own on-disk format without running
// containerd to build it.
//
// Per set i (namespace "test"), exactly what the benchmark's create() leaves behind:
//   - a 256-byte blob (math/rand seeded with i) committed through the content store;
//   - image "image-i" targeting it (media type "irrelevant", size 256);
//   - snapshots "snapshot-i-0" .. "snapshot-i-6" in the native snapshotter, each
//     prepared as "<key>-active" on the previous one and committed as <key>;
//   - container "container-i" (runtime "testruntime", empty spec) on "snapshot-i-6".
//
// The records are written straight with bbolt in containerd's v1 schema
// (metadata/buckets.go), db version 3, with the native snapshotter's metadata.db,
// its snapshot directories and the content blobs beside them:
//
//	ROOT/io.containerd.metadata.v1.bolt/meta.db
//	ROOT/io.containerd.content.v1.content/blobs/sha256/<hex>
//	ROOT/io.containerd.snapshotter.v1.native/{metadata.db,snapshots/<id>}
//
// Build offline (Debian golang-go + golang-github-coreos-bbolt-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o gogen .
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

const (
	snapshotsPerSet = 7
	blobSize        = 256
	dbVersion       = 3 // containerd 1.x (metadata.dbVersion in v1.6 and v1.7)
	kindCommitted   = 3 // snapshots.KindCommitted
)

func main() {
	root := flag.String("root", "", "containerd root directory to create (must not exist or be empty)")
	sets := flag.Int("sets", 10, "number of sets (blob, image, 7 snapshots, container)")
	namespace := flag.String("namespace", "test", "namespace holding the sets")
	flag.Parse()
	if *root == "" || *sets < 0 || *namespace == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := generate(*root, *namespace, *sets); err != nil {
		fmt.Fprintln(os.Stderr, "gogen:", err)
		os.Exit(1)
	}
}

func generate(root, ns string, sets int) error {
	if entries, err := os.ReadDir(root); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s is not empty: refusing to write a containerd root over it", root)
	}
	metaDir := filepath.Join(root, "io.containerd.metadata.v1.bolt")
	contentDir := filepath.Join(root, "io.containerd.content.v1.content")
	nativeDir := filepath.Join(root, "io.containerd.snapshotter.v1.native")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{metaDir, 0711},
		{filepath.Join(contentDir, "ingest"), 0777},
		{filepath.Join(contentDir, "blobs", "sha256"), 0755},
		{filepath.Join(nativeDir, "snapshots"), 0700},
	} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return err
		}
	}

	usages := make([]usage, sets*snapshotsPerSet)
	for k := range usages {
		u, err := snapshotDir(filepath.Join(nativeDir, "snapshots", fmt.Sprint(k+1)))
		if err != nil {
			return err
		}
		usages[k] = u
	}
	digests := make([]string, sets)
	for i := range digests {
		d, err := writeBlob(contentDir, blobFor(int64(i)))
		if err != nil {
			return err
		}
		digests[i] = d
	}
	if err := withDB(filepath.Join(nativeDir, "metadata.db"), 0600, func(tx *bolt.Tx) error {
		return writeNative(tx, ns, sets, usages)
	}); err != nil {
		return fmt.Errorf("native metadata.db: %w", err)
	}
	if err := withDB(filepath.Join(metaDir, "meta.db"), 0644, func(tx *bolt.Tx) error {
		return writeMeta(tx, ns, digests)
	}); err != nil {
		return fmt.Errorf("meta.db: %w", err)
	}
	return nil
}

// withDB runs fn in one write transaction of a new bolt file, as the benchmark
// builds its whole workload in one transaction.
func withDB(path string, mode os.FileMode, fn func(*bolt.Tx) error) error {
	db, err := bolt.Open(path, mode, nil)
	if err != nil {
		return err
	}
	if err := db.Update(fn); err != nil {
		db.Close()
		return err
	}
	return db.Close()
}

// blobFor is the benchmark's bytesFor: 256 bytes of math/rand seeded with i.
func blobFor(i int64) []byte {
	b := make([]byte, blobSize)
	rand.New(rand.NewSource(i)).Read(b)
	return b
}

func writeBlob(contentDir string, data []byte) (string, error) {
	sum := sha256.Sum256(data)
	hexsum := hex.EncodeToString(sum[:])
	// the local store makes committed blobs read-only
	if err := os.WriteFile(filepath.Join(contentDir, "blobs", "sha256", hexsum), data, 0444); err != nil {
		return "", err
	}
	return "sha256:" + hexsum, nil
}

type usage struct{ inodes, size int64 }

// snapshotDir creates a native snapshot's (empty) directory and measures it as
// the native snapshotter does at commit: inodes and allocated blocks.
func snapshotDir(path string) (usage, error) {
	if err := os.Mkdir(path, 0755); err != nil {
		return usage{}, err
	}
	if err := os.Chmod(path, 0755); err != nil {
		return usage{}, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return usage{}, err
	}
	return usage{inodes: 1, size: st.Blocks * 512}, nil
}

// Names the metadata layer gives the backend: "<ns>/<sequence>/<key>". Preparing
// "<key>-active" takes sequence 2k+1 and committing <key> takes 2k+2, where k
// counts snapshots across all sets.
func backendName(ns string, k int, key string) string {
	return fmt.Sprintf("%s/%d/%s", ns, 2*k+2, key)
}

func snapshotKey(i, j int) string { return fmt.Sprintf("snapshot-%d-%d", i, j) }

// writeNative writes the native snapshotter's own store (snapshots/storage): one
// committed record per snapshot, ids 1..7N, and the parent back links.
func writeNative(tx *bolt.Tx, ns string, sets int, usages []usage) error {
	v1, err := tx.CreateBucket([]byte("v1"))
	if err != nil {
		return err
	}
	snaps, err := v1.CreateBucket([]byte("snapshots"))
	if err != nil {
		return err
	}
	parents, err := v1.CreateBucket([]byte("parents"))
	if err != nil {
		return err
	}
	for i := 0; i < sets; i++ {
		for j := 0; j < snapshotsPerSet; j++ {
			k := i*snapshotsPerSet + j
			id := uint64(k + 1)
			name := backendName(ns, k, snapshotKey(i, j))
			b, err := snaps.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			fields := [][2][]byte{
				{[]byte("id"), uvarint(id)},
				{[]byte("kind"), {kindCommitted}},
				{[]byte("inodes"), varint(usages[k].inodes)},
				{[]byte("size"), varint(usages[k].size)},
			}
			if j > 0 {
				fields = append(fields, [2][]byte{[]byte("parent"), []byte(backendName(ns, k-1, snapshotKey(i, j-1)))})
				if err := parents.Put(parentLink(id-1, id), []byte(name)); err != nil {
					return err
				}
			}
			if err := putAll(b, append(fields, timestamps()...)); err != nil {
				return err
			}
		}
	}
	return snaps.SetSequence(uint64(sets * snapshotsPerSet))
}

// parentLink is the native store's key of a parent -> child link: both ids as
// uvarints, separated by a zero byte.
func parentLink(parent, child uint64) []byte {
	return append(append(uvarint(parent), 0), uvarint(child)...)
}

// writeMeta writes containerd's metadata database (metadata/buckets.go).
func writeMeta(tx *bolt.Tx, ns string, digests []string) error {
	v1, err := tx.CreateBucket([]byte("v1"))
	if err != nil {
		return err
	}
	if err := v1.Put([]byte("version"), varint(dbVersion)); err != nil {
		return err
	}
	nsb, err := v1.CreateBucket([]byte(ns))
	if err != nil {
		return err
	}
	content, err := nsb.CreateBucket([]byte("content"))
	if err != nil {
		return err
	}
	blobs, err := content.CreateBucket([]byte("blob"))
	if err != nil {
		return err
	}
	// the writer's ingest record is deleted at commit; its bucket stays
	if _, err := content.CreateBucket([]byte("ingests")); err != nil {
		return err
	}
	imgs, err := nsb.CreateBucket([]byte("images"))
	if err != nil {
		return err
	}
	native, err := bucketPath(nsb, "snapshots", "native")
	if err != nil {
		return err
	}
	ctrs, err := nsb.CreateBucket([]byte("containers"))
	if err != nil {
		return err
	}
	for i, dgst := range digests {
		if err := putBucket(blobs, dgst, append(timestamps(), [2][]byte{[]byte("size"), varint(blobSize)})); err != nil {
			return err
		}
		img, err := imgs.CreateBucket([]byte(fmt.Sprintf("image-%d", i)))
		if err != nil {
			return err
		}
		if err := putAll(img, timestamps()); err != nil {
			return err
		}
		if err := putBucket(img, "target", [][2][]byte{
			{[]byte("digest"), []byte(dgst)},
			{[]byte("mediatype"), []byte("irrelevant")},
			{[]byte("size"), varint(blobSize)},
		}); err != nil {
			return err
		}
		for j := 0; j < snapshotsPerSet; j++ {
			k := i*snapshotsPerSet + j
			key := snapshotKey(i, j)
			fields := append(timestamps(), [2][]byte{[]byte("name"), []byte(backendName(ns, k, key))})
			if j > 0 {
				fields = append(fields, [2][]byte{[]byte("parent"), []byte(snapshotKey(i, j-1))})
			}
			if err := putBucket(native, key, fields); err != nil {
				return err
			}
			if j < snapshotsPerSet-1 {
				if err := putBucket(native.Bucket([]byte(key)), "children", [][2][]byte{{[]byte(snapshotKey(i, j+1)), nil}}); err != nil {
					return err
				}
			}
		}
		ctr, err := ctrs.CreateBucket([]byte(fmt.Sprintf("container-%d", i)))
		if err != nil {
			return err
		}
		if err := putAll(ctr, append(timestamps(),
			[2][]byte{[]byte("spec"), {}}, // an empty protobuf Any
			[2][]byte{[]byte("image"), {}},
			[2][]byte{[]byte("snapshotter"), []byte("native")},
			[2][]byte{[]byte("snapshotKey"), []byte(snapshotKey(i, snapshotsPerSet-1))},
			[2][]byte{[]byte("sandboxid"), {}},
		)); err != nil {
			return err
		}
		if err := putBucket(ctr, "runtime", [][2][]byte{{[]byte("name"), []byte("testruntime")}}); err != nil {
			return err
		}
	}
	return native.SetSequence(uint64(2 * len(digests) * snapshotsPerSet))
}

func bucketPath(b *bolt.Bucket, names ...string) (*bolt.Bucket, error) {
	var err error
	for _, n := range names {
		if b, err = b.CreateBucket([]byte(n)); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func putBucket(parent *bolt.Bucket, name string, fields [][2][]byte) error {
	b, err := parent.CreateBucket([]byte(name))
	if err != nil {
		return err
	}
	return putAll(b, fields)
}

func putAll(b *bolt.Bucket, fields [][2][]byte) error {
	for _, f := range fields {
		if err := b.Put(f[0], f[1]); err != nil {
			return err
		}
	}
	return nil
}

// timestamps is the createdat/updatedat pair containerd writes on every record:
// the same UTC instant, in time.Time's binary form.
func timestamps() [][2][]byte {
	t, err := time.Now().UTC().MarshalBinary()
	if err != nil {
		panic(err) // only for years outside what time.Time can encode
	}
	return [][2][]byte{{[]byte("createdat"), t}, {[]byte("updatedat"), t}}
}

// varint is containerd's encodeInt (signed varint).
func varint(v int64) []byte {
	b := make([]byte, binary.MaxVarintLen64)
	return b[:binary.PutVarint(b, v)]
}

func uvarint(v uint64) []byte {
	b := make([]byte, binary.MaxVarintLen64)
	return b[:binary.PutUvarint(b, v)]
}
