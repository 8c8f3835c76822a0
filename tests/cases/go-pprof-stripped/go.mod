// Case go-pprof-stripped of issue 10: a stripped Go program against its own runtime/pprof profile.
module gopprof

go 1.21
