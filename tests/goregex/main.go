// Command goregex is the test oracle for cargohold's regular-expression filters:
// it answers, with Go's own regexp package (what containerd's filters use),
// whether a pattern compiles and which subjects it matches.
//
// Each input line is fields separated by spaces, each "x" and the hex of a
// string (so the empty string is "x"): a pattern, then subjects.
// Each output line is "err" when regexp.Compile fails, else "ok" and one
// digit per subject: 1 when MatchString matches it, else 0.
package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
)

func decode(field string) string {
	raw, err := hex.DecodeString(strings.TrimPrefix(field, "x"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "goregex: bad hex field:", err)
		os.Exit(2)
	}
	return string(raw)
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) == 0 {
			fmt.Fprintln(os.Stderr, "goregex: empty line")
			os.Exit(2)
		}
		re, err := regexp.Compile(decode(fields[0]))
		if err != nil {
			fmt.Fprintln(out, "err")
			out.Flush()
			continue
		}
		var bits strings.Builder
		for _, field := range fields[1:] {
			if re.MatchString(decode(field)) {
				bits.WriteByte('1')
			} else {
				bits.WriteByte('0')
			}
		}
		fmt.Fprintln(out, "ok", bits.String())
		out.Flush() // answer each line at once: the tests ask one question at a time
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "goregex:", err)
		os.Exit(2)
	}
}
