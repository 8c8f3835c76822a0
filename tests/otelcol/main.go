// Command otelcol-profiles is a real OpenTelemetry Collector receiver of OTLP profiles, for
// tests/test_otelcol.py: the collector's own OTLP receiver (go.opentelemetry.io/collector/
// receiver/otlpreceiver, HTTP only, its /v1development/profiles route) feeds a profiles
// consumer that writes, for each request the receiver accepted, one JSON line saying what
// the collector understood of it, read with pdata's pprofile API: resource and scope, each
// profile's sample and period types, sample count and value totals, the function names
// resolved through the dictionary, the heaviest stacks, the totals per process.pid, and
// what went wrong: an index that does not resolve, or a failure to merge the request into a
// copy of itself as the collector's batching merges requests.
//
// Usage: otelcol-profiles -endpoint 127.0.0.1:PORT [-out FILE]
// Once the receiver listens it prints {"event":"ready","endpoint":...} on stdout; it stops on
// SIGINT/SIGTERM. The receiver's own log (zap) goes to stderr.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configgrpc"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer/xconsumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pprofile"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/receiver/xreceiver"
)

// topStacks is how many of a profile's heaviest stacks a summary lists.
const topStacks = 20

type stackValue struct {
	Frames []string `json:"frames"` // leaf first
	Value  int64    `json:"value"`
}

type profileSummary struct {
	SampleType  string           `json:"sample_type"` // "type/unit"
	PeriodType  string           `json:"period_type"`
	Period      int64            `json:"period"`
	TimeUnixNs  uint64           `json:"time_unix_nano"`
	DurationNs  uint64           `json:"duration_nano"`
	ProfileID   string           `json:"profile_id"` // hex
	Samples     int              `json:"samples"`
	Total       int64            `json:"total"` // sum of every sample's values
	Functions   []string         `json:"functions"`
	TopStacks   []stackValue     `json:"top_stacks"`
	PidTotals   map[string]int64 `json:"pid_totals"` // sample attribute process.pid -> total
	SampleAttrs []string         `json:"sample_attribute_keys"`
	FrameTypes  []string         `json:"frame_types"`            // profile.frame.type of the locations
	MappingKeys []string         `json:"mapping_attribute_keys"` // of the locations' mappings
	Attributes  map[string]any   `json:"attributes"`
}

type resourceSummary struct {
	Resource map[string]any   `json:"resource"`
	Scope    string           `json:"scope"`
	Profiles []profileSummary `json:"profiles"`
}

type requestSummary struct {
	Request          int               `json:"request"`
	ProfileCount     int               `json:"profile_count"`
	SampleCount      int               `json:"sample_count"`
	ResourceProfiles []resourceSummary `json:"resource_profiles"`
	Dictionary       map[string]int    `json:"dictionary"` // table -> length
	Errors           []string          `json:"errors"`     // what did not resolve
}

func sorted(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// summarize reads one request as the collector holds it (pprofile.Profiles).
func summarize(n int, pd pprofile.Profiles) requestSummary {
	dict := pd.Dictionary()
	strs := dict.StringTable()
	out := requestSummary{
		Request: n, ProfileCount: pd.ProfileCount(), SampleCount: pd.SampleCount(),
		Dictionary: map[string]int{
			"strings": strs.Len(), "functions": dict.FunctionTable().Len(),
			"locations": dict.LocationTable().Len(), "mappings": dict.MappingTable().Len(),
			"stacks": dict.StackTable().Len(), "attributes": dict.AttributeTable().Len(),
			"links": dict.LinkTable().Len(),
		},
		Errors: []string{},
	}
	fail := func(format string, args ...any) {
		if len(out.Errors) < 50 {
			out.Errors = append(out.Errors, fmt.Sprintf(format, args...))
		}
	}
	str := func(i int32, what string) string {
		if i < 0 || int(i) >= strs.Len() {
			fail("%s: string index %d out of [0, %d)", what, i, strs.Len())
			return ""
		}
		return strs.At(int(i))
	}
	// The dictionary's index 0 of each table is the zero value (opentelemetry-proto).
	if strs.Len() == 0 || strs.At(0) != "" {
		fail("string_table[0] is not the empty string")
	}
	valueType := func(vt pprofile.ValueType) string {
		return str(vt.TypeStrindex(), "value type") + "/" + str(vt.UnitStrindex(), "value unit")
	}
	var frameTypes, mappingKeys map[string]bool // of the profile being read
	frames := func(stackIndex int32) []string {
		if stackIndex < 0 || int(stackIndex) >= dict.StackTable().Len() {
			fail("stack index %d out of [0, %d)", stackIndex, dict.StackTable().Len())
			return nil
		}
		locs, err := pprofile.FromLocationIndices(dict.LocationTable(), dict.StackTable().At(int(stackIndex)))
		if err != nil {
			fail("stack %d: %v", stackIndex, err)
			return nil
		}
		var names []string
		for _, loc := range locs.All() {
			if loc.MappingIndex() < 0 || int(loc.MappingIndex()) >= dict.MappingTable().Len() {
				fail("mapping index %d out of [0, %d)", loc.MappingIndex(), dict.MappingTable().Len())
			} else if attrs, err := pprofile.FromAttributeIndices(dict.AttributeTable(), dict.MappingTable().At(int(loc.MappingIndex())), dict); err != nil {
				fail("mapping attributes: %v", err)
			} else {
				for k := range attrs.All() {
					mappingKeys[k] = true
				}
			}
			if attrs, err := pprofile.FromAttributeIndices(dict.AttributeTable(), loc, dict); err != nil {
				fail("location attributes: %v", err)
			} else if v, ok := attrs.Get("profile.frame.type"); ok {
				frameTypes[v.AsString()] = true
			}
			for _, line := range loc.Lines().All() {
				fi := line.FunctionIndex()
				if fi < 0 || int(fi) >= dict.FunctionTable().Len() {
					fail("function index %d out of [0, %d)", fi, dict.FunctionTable().Len())
					continue
				}
				names = append(names, str(dict.FunctionTable().At(int(fi)).NameStrindex(), "function name"))
			}
		}
		return names
	}
	for _, rp := range pd.ResourceProfiles().All() {
		for _, sp := range rp.ScopeProfiles().All() {
			rs := resourceSummary{Resource: rp.Resource().Attributes().AsRaw(), Scope: sp.Scope().Name()}
			for _, p := range sp.Profiles().All() {
				ps := profileSummary{
					SampleType: valueType(p.SampleType()), PeriodType: valueType(p.PeriodType()),
					Period: p.Period(), Samples: p.Samples().Len(), PidTotals: map[string]int64{},
					TimeUnixNs: uint64(p.Time()), DurationNs: p.DurationNano(), ProfileID: p.ProfileID().String(),
				}
				frameTypes, mappingKeys = map[string]bool{}, map[string]bool{}
				if attrs, err := pprofile.FromAttributeIndices(dict.AttributeTable(), p, dict); err != nil {
					fail("profile attributes: %v", err)
				} else {
					ps.Attributes = attrs.AsRaw()
				}
				functions := map[string]bool{}
				stacks := map[string]*stackValue{}
				keys := map[string]bool{}
				for _, s := range p.Samples().All() {
					var v int64
					for _, x := range s.Values().All() {
						v += x
					}
					ps.Total += v
					names := frames(s.StackIndex())
					for _, name := range names {
						functions[name] = true
					}
					key := strings.Join(names, "\x00")
					if stacks[key] == nil {
						stacks[key] = &stackValue{Frames: names}
					}
					stacks[key].Value += v
					attrs, err := pprofile.FromAttributeIndices(dict.AttributeTable(), s, dict)
					if err != nil {
						fail("sample attributes: %v", err)
						continue
					}
					for k, val := range attrs.All() {
						keys[k] = true
						if k == "process.pid" {
							ps.PidTotals[val.AsString()] += v
						}
					}
				}
				ps.Functions = sorted(functions)
				ps.SampleAttrs = sorted(keys)
				ps.FrameTypes = sorted(frameTypes)
				ps.MappingKeys = sorted(mappingKeys)
				for _, sv := range stacks {
					ps.TopStacks = append(ps.TopStacks, *sv)
				}
				sort.Slice(ps.TopStacks, func(i, j int) bool {
					a, b := ps.TopStacks[i], ps.TopStacks[j]
					if a.Value != b.Value {
						return a.Value > b.Value
					}
					return strings.Join(a.Frames, "\x00") < strings.Join(b.Frames, "\x00")
				})
				if len(ps.TopStacks) > topStacks {
					ps.TopStacks = ps.TopStacks[:topStacks]
				}
				rs.Profiles = append(rs.Profiles, ps)
			}
			out.ResourceProfiles = append(out.ResourceProfiles, rs)
		}
	}
	return out
}

// checkMerge merges a copy of pd into another copy, as the collector's batching merges two
// requests (pprofile's MergeTo re-interns every dictionary entry of the source into the
// destination's and follows every index), and tells what went wrong: an error, or a merged
// request that does not read as the request twice.
func checkMerge(pd pprofile.Profiles, read requestSummary) string {
	src, dst := pprofile.NewProfiles(), pprofile.NewProfiles()
	pd.CopyTo(src)
	pd.CopyTo(dst)
	if err := src.MergeTo(dst); err != nil {
		return fmt.Sprintf("merge: %v", err)
	}
	merged := summarize(read.Request, dst)
	a, _ := json.Marshal(append(read.ResourceProfiles, read.ResourceProfiles...))
	b, _ := json.Marshal(merged.ResourceProfiles)
	if string(a) != string(b) || len(merged.Errors) > 0 {
		return fmt.Sprintf("merge: the merged request does not read as the request twice (errors %v)", merged.Errors)
	}
	return ""
}

type nopHost struct{}

func (nopHost) GetExtensions() map[component.ID]component.Component { return nil }

func run() error {
	endpoint := flag.String("endpoint", "127.0.0.1:4318", "host:port of the OTLP/HTTP receiver")
	outPath := flag.String("out", "", "file the JSON lines go to (default: stdout)")
	flag.Parse()

	var out io.Writer = os.Stdout
	if *outPath != "" {
		f, err := os.Create(*outPath)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	logger, err := zap.NewDevelopment()
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()

	var mu sync.Mutex
	n := 0
	enc := json.NewEncoder(out)
	next, err := xconsumer.NewProfiles(func(_ context.Context, pd pprofile.Profiles) error {
		mu.Lock()
		defer mu.Unlock()
		n++
		read := summarize(n, pd)
		if problem := checkMerge(pd, read); problem != "" {
			read.Errors = append(read.Errors, problem)
		}
		if err := enc.Encode(read); err != nil {
			return err
		}
		if f, ok := out.(*os.File); ok {
			return f.Sync()
		}
		return nil
	})
	if err != nil {
		return err
	}

	factory := otlpreceiver.NewFactory()
	cfg := factory.CreateDefaultConfig().(*otlpreceiver.Config)
	cfg.Protocols.GRPC = configoptional.None[configgrpc.ServerConfig]()
	http := cfg.Protocols.HTTP.GetOrInsertDefault()
	http.ServerConfig.NetAddr.Endpoint = *endpoint
	set := receiver.Settings{
		ID: component.NewID(factory.Type()),
		TelemetrySettings: component.TelemetrySettings{
			Logger: logger, TracerProvider: tracenoop.NewTracerProvider(),
			MeterProvider: metricnoop.NewMeterProvider(), Resource: pcommon.NewResource(),
		},
		BuildInfo: component.NewDefaultBuildInfo(),
	}
	rcv, err := factory.(xreceiver.Factory).CreateProfiles(context.Background(), set, cfg, next)
	if err != nil {
		return err
	}
	if err := rcv.Start(context.Background(), nopHost{}); err != nil {
		return err
	}
	fmt.Printf("{\"event\":\"ready\",\"endpoint\":%q}\n", *endpoint)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	return rcv.Shutdown(context.Background())
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "otelcol-profiles:", err)
		os.Exit(1)
	}
}
