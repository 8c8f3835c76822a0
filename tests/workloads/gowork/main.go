// gowork: a Go workload for the profiler's tests. Spins in a method that is not inlined
// and calls a two-deep chain of functions the compiler inlines, so that samples land in
// inlined code: mix (inlined) <- scramble (inlined) <- (*Worker).Spin <- main.run.
// With "alloc" as argv[2] it allocates instead, so that the garbage collector runs on the
// system stack (runtime.systemstack) much of the time: mark workers and allocation assists.
// Prints "ready" once spinning; runs for argv[1] seconds (default 30).
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

type Worker struct{ acc uint64 }

func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 29
	return x
}

func scramble(x uint64) uint64 {
	return mix(x+0x9e3779b97f4a7c15) ^ mix(x)
}

//go:noinline
func (w *Worker) Spin(until time.Time) {
	for i := uint64(0); ; i++ {
		w.acc += scramble(w.acc ^ i)
		if i&0xfffff == 0 && time.Now().After(until) {
			return
		}
	}
}

type node struct {
	next *node
	buf  [64]byte
}

//go:noinline
func churn(n int) *node {
	var head *node
	for i := 0; i < n; i++ {
		head = &node{next: head}
	}
	return head
}

//go:noinline
func allocate(seconds int) uint64 {
	until := time.Now().Add(time.Duration(seconds) * time.Second)
	var kept uint64
	for time.Now().Before(until) {
		kept += uint64(churn(100000).buf[0]) + 1
	}
	return kept
}

//go:noinline
func run(seconds int) uint64 {
	w := &Worker{}
	w.Spin(time.Now().Add(time.Duration(seconds) * time.Second))
	return w.acc
}

func main() {
	seconds := 30
	if len(os.Args) > 1 {
		if n, err := strconv.Atoi(os.Args[1]); err == nil {
			seconds = n
		}
	}
	fmt.Println("ready")
	os.Stdout.Sync()
	if len(os.Args) > 2 && os.Args[2] == "alloc" {
		fmt.Fprintln(os.Stderr, allocate(seconds))
		return
	}
	fmt.Fprintln(os.Stderr, run(seconds))
}
