// Case cgo-stack-switch of issue 10, standing for open-telemetry/opentelemetry-ebpf-profiler PR #1331 and #1516 (Go cgo stack unwinding), golang/go#40044.
module cgocb

go 1.21
