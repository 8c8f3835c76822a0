// Case cgo-stack-switch of issue 10, standing for open-telemetry/opentelemetry-ebpf-profiler PR #1331 and #1516 (Go cgo stack unwinding), golang/go#40044.
// Go -> C -> Go: main calls a C driver loop (through cgo) that calls back into
// an exported Go function doing the CPU work, as plugins, SQLite callbacks or
// GUI toolkits do. Expected stack: goWork <- ... <- c_driver <- ... <- main.main.
// With argv[2] == "c" the work stays in C: c_work <- c_only <- ... <- main.main.
package main

/*
#include <stdint.h>
extern void goWork(int64_t n);
static void __attribute__((noinline)) c_driver(int64_t rounds) {
    for (int64_t i = 0; i < rounds; i++) goWork(200000);
}
static volatile double c_sink;
static void __attribute__((noinline)) c_work(int64_t n) {
    double x = 0; for (int64_t i = 0; i < n; i++) x += i * 0.25; c_sink += x;
}
static void __attribute__((noinline)) c_only(int64_t rounds) {
    for (int64_t i = 0; i < rounds; i++) c_work(200000);
}
*/
import "C"

import (
	"os"
	"strconv"
	"time"
)

var sink float64

//export goWork
func goWork(n C.int64_t) {
	x := 0.0
	for i := 0; i < int(n); i++ {
		x += float64(i) * 0.5
	}
	sink += x
}

//go:noinline
func runDriver() { C.c_driver(50) }

//go:noinline
func runCOnly() { C.c_only(50) }

func main() {
	secs := 6.0
	if len(os.Args) > 1 {
		secs, _ = strconv.ParseFloat(os.Args[1], 64)
	}
	mode := "callback"
	if len(os.Args) > 2 {
		mode = os.Args[2]
	}
	t0 := time.Now()
	for time.Since(t0).Seconds() < secs {
		if mode == "c" {
			runCOnly() // Go -> C only
		} else {
			runDriver() // Go -> C -> Go
		}
	}
}
