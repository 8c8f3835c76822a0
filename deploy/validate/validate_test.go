// Package validate checks the Kubernetes objects ddprofiler ships: every object of
// deploy/kubernetes/*.yaml and of the Helm chart's renderings (files named by
// DDPROF_RENDERED, comma separated, which scripts/check-kubernetes.sh makes with
// `helm template`) decodes strictly (case-sensitive, no unknown or duplicate field) into the Kubernetes API
// types; the chart rendered with its defaults as release "ddprofiler" (the first file) is
// the same objects as the plain manifests; and every DaemonSet keeps the security and
// sizing contract: host PID namespace, not privileged, exactly the capabilities the
// sampler needs, read-only root, non-root user, requests and limits, every node, the
// Agent at the node's IP, the node name as host tag, the API key from a Secret.
package validate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

var wantCaps = []string{"BPF", "DAC_READ_SEARCH", "PERFMON", "SYSLOG", "SYS_PTRACE"}

// decodeFile splits a multi-document YAML file and decodes each object strictly into its
// API type, chosen by apiVersion and kind.
func decodeFile(t *testing.T, path string) []any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []any
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if meta.Kind == "" {
			continue // a document of comments only
		}
		var obj any
		switch meta.APIVersion + "/" + meta.Kind {
		case "apps/v1/DaemonSet":
			obj = &appsv1.DaemonSet{}
		case "v1/ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "v1/Secret":
			obj = &corev1.Secret{}
		default:
			t.Fatalf("%s: unexpected object %s %s", path, meta.APIVersion, meta.Kind)
		}
		// As the API server decodes: field names case-sensitive (encoding/json alone
		// would take hostPid for hostPID), no unknown or duplicate field.
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			t.Fatalf("%s: %s: %v", path, meta.Kind, err)
		}
		strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowUnknownFields, kjson.DisallowDuplicateFields)
		if err != nil || len(strict) > 0 {
			t.Fatalf("%s: %s does not decode strictly: %v %v", path, meta.Kind, err, strict)
		}
		objs = append(objs, obj)
	}
	if len(objs) == 0 {
		t.Fatalf("%s: no object", path)
	}
	return objs
}

func manifestFiles(t *testing.T) []string {
	files, err := filepath.Glob("../kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/kubernetes: %v", err)
	}
	return files
}

func renderedFiles(t *testing.T) []string {
	v := os.Getenv("DDPROF_RENDERED")
	if v == "" {
		t.Fatal("DDPROF_RENDERED is not set: run scripts/check-kubernetes.sh")
	}
	return strings.Split(v, ",")
}

func allObjects(t *testing.T, files []string) []any {
	var objs []any
	for _, f := range files {
		objs = append(objs, decodeFile(t, f)...)
	}
	return objs
}

func TestChartWithDefaultsIsThePlainManifests(t *testing.T) {
	plain := allObjects(t, manifestFiles(t))
	chart := decodeFile(t, renderedFiles(t)[0])
	key := func(o any) string { return fmt.Sprintf("%T", o) }
	sort.Slice(plain, func(i, j int) bool { return key(plain[i]) < key(plain[j]) })
	sort.Slice(chart, func(i, j int) bool { return key(chart[i]) < key(chart[j]) })
	if len(plain) != len(chart) {
		t.Fatalf("%d objects in deploy/kubernetes, %d in the chart", len(plain), len(chart))
	}
	for i := range plain {
		if !reflect.DeepEqual(plain[i], chart[i]) {
			a, _ := yaml.Marshal(plain[i])
			b, _ := yaml.Marshal(chart[i])
			t.Errorf("%s differs:\n--- deploy/kubernetes\n%s\n--- chart\n%s", key(plain[i]), a, b)
		}
	}
}

func TestEveryDaemonSetKeepsTheContract(t *testing.T) {
	files := append(manifestFiles(t), renderedFiles(t)...)
	seen := 0
	for _, f := range files {
		for _, o := range decodeFile(t, f) {
			if ds, ok := o.(*appsv1.DaemonSet); ok {
				seen++
				checkDaemonSet(t, f, ds)
			}
		}
	}
	if seen < len(files) {
		t.Fatalf("%d DaemonSets in %d files", seen, len(files))
	}
}

func checkDaemonSet(t *testing.T, file string, ds *appsv1.DaemonSet) {
	fail := func(format string, args ...any) {
		t.Errorf("%s: DaemonSet %s: %s", file, ds.Name, fmt.Sprintf(format, args...))
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostPID {
		fail("hostPID is not set: the host's processes would be invisible")
	}
	if pod.HostNetwork || pod.HostIPC {
		fail("hostNetwork/hostIPC are not needed")
	}
	if !reflect.DeepEqual(ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels) {
		fail("selector %v does not select the pod labels %v", ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels)
	}
	everyNode := false
	for _, tol := range pod.Tolerations {
		if tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == "" {
			everyNode = true
		}
	}
	if !everyNode {
		fail("no toleration of every taint (operator Exists, no key): some nodes would go unprofiled")
	}
	if len(pod.Containers) != 1 {
		fail("%d containers", len(pod.Containers))
		return
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		fail("no securityContext with capabilities")
		return
	}
	if sc.Privileged != nil && *sc.Privileged {
		fail("privileged")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		fail("the root file system is writable")
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		fail("not forced to a non-root user")
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		fail("allowPrivilegeEscalation: false sets no_new_privs, which drops the interpreter's file capabilities")
	}
	drop := fmt.Sprint(sc.Capabilities.Drop)
	if drop != "[ALL]" {
		fail("capabilities dropped: %s, want [ALL]", drop)
	}
	var add []string
	for _, c := range sc.Capabilities.Add {
		add = append(add, string(c))
	}
	sort.Strings(add)
	if !reflect.DeepEqual(add, wantCaps) {
		fail("capabilities added: %v, want exactly %v", add, wantCaps)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[r]
		lim, okLim := c.Resources.Limits[r]
		if !okReq || !okLim {
			fail("no %s request or limit", r)
		} else if req.Cmp(lim) > 0 {
			fail("%s request %s above its limit %s", r, req.String(), lim.String())
		}
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	fieldRef := func(name, path string) {
		e, ok := env[name]
		if !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path {
			fail("%s is not the downward API's %s", name, path)
		}
	}
	fieldRef("DD_AGENT_HOST", "status.hostIP")
	fieldRef("KUBERNETES_NODE_NAME", "spec.nodeName")
	if e, ok := env["DD_API_KEY"]; !ok || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		fail("DD_API_KEY does not come from a Secret")
	}
	for _, e := range c.Env {
		if strings.Contains(strings.ToUpper(e.Name), "API_KEY") && e.Value != "" {
			fail("%s has a literal value: keys belong in a Secret", e.Name)
		}
	}
}
