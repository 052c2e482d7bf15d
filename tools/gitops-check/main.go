// gitops-check answers, with the GitOps tools' own code, what they make of
// a ClientCertificateSet. certpin's tests run it; it is not shipped.
//
//	gitops-check kstatus < object.json          Flux's verdict (kstatus): "<Status>\t<message>"
//	gitops-check argo-health DIR                 runs DIR/health_test.yaml against DIR/health.lua
//	                                             the way Argo CD's resource_customizations tests do
//
// The kstatus verdict is computed by sigs.k8s.io/cli-utils/pkg/kstatus, the
// library Flux's kustomize-controller and helm-controller use for health;
// the Lua runs in gopher-lua, the interpreter Argo CD embeds.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: gitops-check kstatus < object.json | gitops-check argo-health DIR")
	}
	switch os.Args[1] {
	case "kstatus":
		kstatus()
	case "argo-health":
		if len(os.Args) != 3 {
			fail("usage: gitops-check argo-health DIR")
		}
		argoHealth(os.Args[2])
	default:
		fail("unknown command " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "gitops-check:", msg)
	os.Exit(2)
}

func kstatus() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err.Error())
	}
	// Through the API machinery's own JSON decoding, as a client reads it
	// (integers stay integers).
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		fail("reading the object: " + err.Error())
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		fail("reading the object: " + err.Error())
	}
	res, err := status.Compute(u)
	if err != nil {
		fail("kstatus: " + err.Error())
	}
	fmt.Printf("%s\t%s\n", res.Status, res.Message)
}

type healthTests struct {
	Tests []struct {
		HealthStatus struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"healthStatus"`
		InputPath string `json:"inputPath"`
	} `json:"tests"`
}

func argoHealth(dir string) {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		fail(err.Error())
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		fail(err.Error())
	}
	var tests healthTests
	if err := yaml.UnmarshalStrict(raw, &tests); err != nil {
		fail("health_test.yaml: " + err.Error())
	}
	if len(tests.Tests) == 0 {
		fail("health_test.yaml has no tests")
	}
	failed := 0
	for _, t := range tests.Tests {
		input, err := os.ReadFile(filepath.Join(dir, t.InputPath))
		if err != nil {
			fail(err.Error())
		}
		obj := map[string]interface{}{}
		if err := yaml.Unmarshal(input, &obj); err != nil {
			fail(t.InputPath + ": " + err.Error())
		}
		got, msg, err := runHealth(string(script), obj)
		switch {
		case err != nil:
			fmt.Printf("FAIL %s: %v\n", t.InputPath, err)
			failed++
		case got != t.HealthStatus.Status || msg != t.HealthStatus.Message:
			fmt.Printf("FAIL %s: got %s %q, want %s %q\n", t.InputPath, got, msg,
				t.HealthStatus.Status, t.HealthStatus.Message)
			failed++
		default:
			fmt.Printf("ok   %s: %s %q\n", t.InputPath, got, msg)
		}
	}
	if failed > 0 {
		fmt.Printf("%d of %d health tests failed\n", failed, len(tests.Tests))
		os.Exit(1)
	}
	fmt.Printf("%d health tests passed\n", len(tests.Tests))
}

// runHealth runs a health script as Argo CD does: the object as the global
// `obj` (a table decoded from its JSON), the script returning a table with
// `status` and `message`. Only the libraries Argo CD opens are opened.
func runHealth(script string, obj map[string]interface{}) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		l.Push(l.NewFunction(lib.fn))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	// Through JSON, as Argo CD does: numbers are floats, maps are tables.
	b, err := json.Marshal(obj)
	if err != nil {
		return "", "", err
	}
	var generic interface{}
	if err := json.Unmarshal(b, &generic); err != nil {
		return "", "", err
	}
	l.SetGlobal("obj", toLua(l, generic))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	return lua.LVAsString(ret.RawGetString("status")), lua.LVAsString(ret.RawGetString("message")), nil
}

func toLua(l *lua.LState, v interface{}) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		t := l.NewTable()
		for _, e := range v {
			t.Append(toLua(l, e))
		}
		return t
	case map[string]interface{}:
		t := l.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(l, e))
		}
		return t
	default:
		return lua.LString(fmt.Sprint(v))
	}
}
