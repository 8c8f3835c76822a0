// Case go-pprof-stripped of issue 10 (kind 7, Go: a frameless leaf hides its caller), standing for golang/go#40044 and the issue's own report (main.drive lost from main.hash <- main.drive <- main.main).
// A Go program, built stripped (-ldflags=-s -w), that profiles itself with runtime/pprof
// while ddprofiler samples it: main.main -> main.run -> main.drive -> main.hash, where hash is
// a frameless leaf (no locals, no calls: the compiler gives it no frame, so it neither saves
// nor sets the frame pointer, and a frame-pointer walk from it skips main.drive).
// Usage: gopprof PROFILE SECONDS; prints "ready" once its own CPU profile runs.
package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"time"
)

var sink uint64

//go:noinline
func hash(x uint64, n int) uint64 {
	for i := 0; i < n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

//go:noinline
func drive(rounds int) uint64 {
	var acc uint64
	for r := 0; r < rounds; r++ {
		acc += hash(uint64(r)+1, 100000)
	}
	return acc
}

//go:noinline
func run(deadline time.Time) {
	for time.Now().Before(deadline) {
		sink += drive(20)
	}
}

func main() {
	secs, err := strconv.ParseFloat(os.Args[2], 64)
	if err != nil {
		panic(err)
	}
	f, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		panic(err)
	}
	fmt.Println("ready")
	run(time.Now().Add(time.Duration(secs * float64(time.Second))))
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		panic(err)
	}
}
