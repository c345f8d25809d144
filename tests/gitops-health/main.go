// Command gitops-health prints the health that Flux and Argo CD would report for live Kubernetes objects.
//
// It reads `kubectl get -o json` output on stdin (one object or a List) and writes one JSON line per object:
//
//	{"kind":"ModelDeployment","name":"digits","kstatus":{"status":"Current","message":"..."},
//	 "argo":{"status":"Healthy","message":"..."}}
//
// kstatus is sigs.k8s.io/cli-utils' status.Compute, the library Flux's kustomize-controller and helm-controller
// use to wait for readiness. Argo CD's assessment is gitops-engine's health.GetResourceHealth: built-in checks for
// core kinds (Deployment, Job, Service, Pod...), and for custom resources a Lua health script, run the way Argo CD
// runs `resource.customizations.health.<group>_<Kind>` from argocd-cm (gopher-lua, the object in the global `obj`,
// the base, package and table libraries, a one-second budget). `--lua GROUP/KIND=FILE` names such a script.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/argoproj/gitops-engine/pkg/health"
	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// verdict is one tool's answer for one object.
type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// line is what gets printed per object.
type line struct {
	Kind    string  `json:"kind"`
	Name    string  `json:"name"`
	KStatus verdict `json:"kstatus"`
	Argo    verdict `json:"argo"`
}

// luaScripts maps "group/Kind" to a health script, as argocd-cm keys them.
type luaScripts map[string]string

func (s luaScripts) String() string { return fmt.Sprint(map[string]string(s)) }

func (s luaScripts) Set(v string) error {
	key, file, ok := strings.Cut(v, "=")
	if !ok || !strings.Contains(key, "/") {
		return fmt.Errorf("want GROUP/KIND=FILE, got %q", v)
	}
	body, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	s[key] = string(body)
	return nil
}

// luaOverride implements health.HealthOverride with Lua scripts, as Argo CD's resource customizations do.
type luaOverride struct{ scripts luaScripts }

func (o luaOverride) GetResourceHealth(obj *unstructured.Unstructured) (*health.HealthStatus, error) {
	gvk := obj.GroupVersionKind()
	script, ok := o.scripts[gvk.Group+"/"+gvk.Kind]
	if !ok {
		return nil, nil
	}
	return runHealthLua(obj, script)
}

// runHealthLua runs a health script the way Argo CD's Lua VM does and validates its answer.
func runHealthLua(obj *unstructured.Unstructured, script string) (*health.HealthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj.Object))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("health script returned %s, want a table", l.Get(-1).Type())
	}
	hs := &health.HealthStatus{
		Status:  health.HealthStatusCode(lua.LVAsString(ret.RawGetString("status"))),
		Message: lua.LVAsString(ret.RawGetString("message")),
	}
	switch hs.Status {
	case health.HealthStatusHealthy, health.HealthStatusProgressing, health.HealthStatusDegraded,
		health.HealthStatusSuspended, health.HealthStatusMissing, health.HealthStatusUnknown:
		return hs, nil
	}
	return &health.HealthStatus{Status: health.HealthStatusUnknown, Message: fmt.Sprintf("invalid status %q", hs.Status)}, nil
}

// toLua converts decoded JSON into Lua values: objects and arrays become tables (arrays 1-based).
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := l.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(l, e))
		}
		return t
	case []any:
		t := l.NewTable()
		for _, e := range v {
			t.Append(toLua(l, e))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case json.Number:
		f, _ := v.Float64()
		return lua.LNumber(f)
	}
	return lua.LNil
}

func main() {
	scripts := luaScripts{}
	flag.Var(scripts, "lua", "GROUP/KIND=FILE: Argo CD Lua health script for a custom resource (repeatable)")
	flag.Parse()
	if err := run(os.Stdin, os.Stdout, scripts); err != nil {
		fmt.Fprintln(os.Stderr, "gitops-health:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer, scripts luaScripts) error {
	body, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	var obj unstructured.Unstructured
	if err := obj.UnmarshalJSON(body); err != nil {
		return fmt.Errorf("stdin is not a Kubernetes object or List: %w", err)
	}
	objects := []unstructured.Unstructured{obj}
	if obj.IsList() {
		list, err := obj.ToList()
		if err != nil {
			return err
		}
		objects = list.Items
	}
	enc := json.NewEncoder(out)
	for i := range objects {
		o := &objects[i]
		l := line{Kind: o.GetKind(), Name: o.GetName()}
		res, err := status.Compute(o)
		if err != nil {
			return fmt.Errorf("kstatus of %s/%s: %w", o.GetKind(), o.GetName(), err)
		}
		l.KStatus = verdict{Status: res.Status.String(), Message: res.Message}
		hs, err := health.GetResourceHealth(o, luaOverride{scripts})
		if err != nil {
			return fmt.Errorf("argo health of %s/%s: %w", o.GetKind(), o.GetName(), err)
		}
		if hs != nil {
			l.Argo = verdict{Status: string(hs.Status), Message: hs.Message}
		}
		if err := enc.Encode(l); err != nil {
			return err
		}
	}
	return nil
}
