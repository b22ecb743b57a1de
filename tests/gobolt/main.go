// Command gobolt writes and dumps bbolt files for cargohold's bolt reader tests.
//
//	gobolt write SPEC.json OUT.db   build OUT.db from a JSON description (see spec below)
//	gobolt dump DB                  print every bucket, key and value of DB (and page statistics) as JSON
//	gobolt pages DB                 print the type of every page (not continuation pages) below the high-water mark as JSON
//	gobolt churn DB SECONDS         commit transactions rewriting bucket "churn" for SECONDS
//
// A spec is {"page_size": N, "no_freelist_sync": bool, "txns": [{"ops": [OP, ...]}, ...]}; each
// txn is one committed transaction. Byte strings are UTF-8 text, or "hex:..." for raw bytes, and
// "{i}" in them is replaced by the index of the enclosing repeat op. OPs:
//
//	{"op": "bucket", "path": [B, ...]}                     create the nested bucket if missing
//	{"op": "put", "path": [...], "key": K, "value": V}     V: a byte string, or {"random": SIZE}
//	{"op": "delete", "path": [...], "key": K}
//	{"op": "delete_bucket", "path": [...]}                 delete the last bucket of path
//	{"op": "sequence", "path": [...], "value": N}
//	{"op": "fill", "path": [...], "count": N, "key": FMT, "value": V}   FMT holds {i}: N puts
//	{"op": "repeat", "count": N, "ops": [...]}             run ops N times, {i} = 0..N-1
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

type op struct {
	Op    string          `json:"op"`
	Path  []string        `json:"path"`
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
	Count int             `json:"count"`
	Ops   []op            `json:"ops"`
}

type spec struct {
	PageSize       int  `json:"page_size"`
	NoFreelistSync bool `json:"no_freelist_sync"`
	Txns           []struct {
		Ops []op `json:"ops"`
	} `json:"txns"`
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "gobolt: "+format+"\n", args...)
	os.Exit(1)
}

func decode(s string, i int) []byte {
	s = strings.ReplaceAll(s, "{i}", strconv.Itoa(i))
	if strings.HasPrefix(s, "hex:") {
		b, err := hex.DecodeString(s[4:])
		if err != nil {
			fail("bad hex %q: %v", s, err)
		}
		return b
	}
	return []byte(s)
}

type writer struct {
	rng   *rand.Rand
	cache map[string]*bolt.Bucket // buckets opened in the current transaction, by path
}

func (w *writer) value(raw json.RawMessage, i int) []byte {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return decode(s, i)
	}
	var r struct {
		Random int `json:"random"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		fail("bad value %s: %v", raw, err)
	}
	b := make([]byte, r.Random)
	w.rng.Read(b)
	return b
}

// bucket returns the bucket at path, creating it when create is set.
func (w *writer) bucket(tx *bolt.Tx, path []string, i int, create bool) *bolt.Bucket {
	if len(path) == 0 {
		fail("empty bucket path")
	}
	var b *bolt.Bucket
	var err error
	id := ""
	for n, name := range path {
		key := decode(name, i)
		id += "/" + hex.EncodeToString(key)
		if cached, ok := w.cache[id]; ok {
			b = cached
			continue
		}
		switch {
		case n == 0 && create:
			b, err = tx.CreateBucketIfNotExists(key)
		case n == 0:
			b = tx.Bucket(key)
		case create:
			b, err = b.CreateBucketIfNotExists(key)
		default:
			b = b.Bucket(key)
		}
		if err != nil {
			fail("bucket %v: %v", path, err)
		}
		if b == nil {
			fail("no bucket %v", path)
		}
		w.cache[id] = b
	}
	return b
}

func (w *writer) run(tx *bolt.Tx, ops []op, i int) {
	for _, o := range ops {
		var err error
		switch o.Op {
		case "bucket":
			w.bucket(tx, o.Path, i, true)
		case "put":
			err = w.bucket(tx, o.Path, i, true).Put(decode(o.Key, i), w.value(o.Value, i))
		case "delete":
			err = w.bucket(tx, o.Path, i, false).Delete(decode(o.Key, i))
		case "delete_bucket":
			w.cache = map[string]*bolt.Bucket{}
			last := decode(o.Path[len(o.Path)-1], i)
			if len(o.Path) == 1 {
				err = tx.DeleteBucket(last)
			} else {
				err = w.bucket(tx, o.Path[:len(o.Path)-1], i, false).DeleteBucket(last)
			}
		case "sequence":
			var n uint64
			if err = json.Unmarshal(o.Value, &n); err == nil {
				err = w.bucket(tx, o.Path, i, true).SetSequence(n)
			}
		case "fill":
			b := w.bucket(tx, o.Path, i, true)
			for j := 0; j < o.Count && err == nil; j++ {
				err = b.Put(decode(o.Key, j), w.value(o.Value, j))
			}
		case "repeat":
			for j := 0; j < o.Count; j++ {
				w.run(tx, o.Ops, j)
			}
		default:
			fail("unknown op %q", o.Op)
		}
		if err != nil {
			fail("%s %v: %v", o.Op, o.Path, err)
		}
	}
}

func write(specPath, out string) {
	raw, err := os.ReadFile(specPath)
	if err != nil {
		fail("%v", err)
	}
	var s spec
	if err := json.Unmarshal(raw, &s); err != nil {
		fail("spec: %v", err)
	}
	db, err := bolt.Open(out, 0o644, &bolt.Options{PageSize: s.PageSize, NoFreelistSync: s.NoFreelistSync})
	if err != nil {
		fail("open: %v", err)
	}
	w := &writer{rng: rand.New(rand.NewSource(1))}
	for _, t := range s.Txns {
		w.cache = map[string]*bolt.Bucket{}
		if err := db.Update(func(tx *bolt.Tx) error { w.run(tx, t.Ops, 0); return nil }); err != nil {
			fail("update: %v", err)
		}
	}
	if err := db.Close(); err != nil {
		fail("close: %v", err)
	}
}

type dumpedBucket struct {
	Sequence uint64        `json:"sequence"`
	Items    []interface{} `json:"items"` // [key hex, value hex] or [key hex, bucket]
}

func dumpBucket(b *bolt.Bucket) *dumpedBucket {
	d := &dumpedBucket{Sequence: b.Sequence(), Items: []interface{}{}}
	err := b.ForEach(func(k, v []byte) error {
		if v == nil {
			d.Items = append(d.Items, []interface{}{hex.EncodeToString(k), dumpBucket(b.Bucket(k))})
		} else {
			d.Items = append(d.Items, []interface{}{hex.EncodeToString(k), hex.EncodeToString(v)})
		}
		return nil
	})
	if err != nil {
		fail("foreach: %v", err)
	}
	return d
}

func openRead(path string) *bolt.DB {
	db, err := bolt.Open(path, 0o444, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		fail("open: %v", err)
	}
	return db
}

func dump(path string) {
	db := openRead(path)
	defer db.Close()
	err := db.View(func(tx *bolt.Tx) error {
		top := []interface{}{}
		var stats bolt.BucketStats
		err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			top = append(top, []interface{}{hex.EncodeToString(name), dumpBucket(b)})
			stats.Add(b.Stats())
			return nil
		})
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
			"txid": tx.ID(), "page_size": db.Info().PageSize, "buckets": top, "stats": stats,
		})
	})
	if err != nil {
		fail("view: %v", err)
	}
}

func pages(path string) {
	// Tx.Page needs the freelist, which a read-only DB does not load.
	db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		fail("open: %v", err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		out := []*bolt.PageInfo{}
		for id := 0; ; id++ {
			p, err := tx.Page(id)
			if err != nil {
				return err
			}
			if p == nil {
				break
			}
			out = append(out, p)
			if p.Type != "free" {
				id += p.OverflowCount // continuation pages have no header
			}
		}
		return json.NewEncoder(os.Stdout).Encode(out)
	})
	if err != nil {
		fail("view: %v", err)
	}
}

// churn rewrites every key of bucket "churn" in each transaction: a consistent
// snapshot has all of its values equal (one generation, padded to 100 bytes).
// Bucket "static" (2000 keys, each its own value) is written once and never again.
func churn(path string, seconds float64) {
	db, err := bolt.Open(path, 0o644, nil)
	if err != nil {
		fail("open: %v", err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("static"))
		for k := 0; k < 2000 && err == nil; k++ {
			key := []byte(fmt.Sprintf("static-%04d", k))
			err = b.Put(key, key)
		}
		return err
	})
	if err != nil {
		fail("update: %v", err)
	}
	deadline := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	gen := 0
	for ; time.Now().Before(deadline); gen++ {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("churn"))
			if err != nil {
				return err
			}
			g := []byte(fmt.Sprintf("%-100d", gen))
			for k := 0; k < 300; k++ {
				if err := b.Put([]byte(fmt.Sprintf("key-%04d", k)), g); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			fail("update: %v", err)
		}
	}
	fmt.Println(gen)
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: gobolt write SPEC OUT | dump DB | pages DB | churn DB SECONDS")
	}
	switch os.Args[1] {
	case "write":
		if len(os.Args) != 4 {
			fail("usage: gobolt write SPEC OUT")
		}
		write(os.Args[2], os.Args[3])
	case "dump":
		dump(os.Args[2])
	case "pages":
		pages(os.Args[2])
	case "churn":
		if len(os.Args) != 4 {
			fail("usage: gobolt churn DB SECONDS")
		}
		s, err := strconv.ParseFloat(os.Args[3], 64)
		if err != nil {
			fail("bad seconds %q", os.Args[3])
		}
		churn(os.Args[2], s)
	default:
		fail("unknown command %q", os.Args[1])
	}
}
