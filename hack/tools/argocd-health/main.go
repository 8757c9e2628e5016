// argocd-health runs an Argo CD resource health check (a health.lua script) on
// one Kubernetes object the way the Argo CD application controller does, and
// prints the health it returns as JSON: {"status": "...", "message": "..."}.
//
// As Argo CD runs a health check from argocd-cm (without
// resource.customizations.useOpenLibs, util/lua/lua.go): on gopher-lua, with
// only the package, base and table libraries, no string or math library, and
// an os module cut down to time and date that only require("os") reaches (Argo
// CD sets no global os); the object as the global `obj`, its integers as Lua
// numbers; one second to run; a result whose status is not one Argo CD knows
// becomes Unknown.
//
// Usage: argocd-health -script health.lua < object.json
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

type health struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

var knownStatuses = map[string]bool{"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true}

func main() {
	script := flag.String("script", "", "the health.lua script to run")
	flag.Parse()
	if *script == "" {
		fail(errors.New("-script is required"))
	}
	source, err := os.ReadFile(*script)
	if err != nil {
		fail(err)
	}
	object, err := readObject(os.Stdin)
	if err != nil {
		fail(fmt.Errorf("stdin: %w", err))
	}
	result, err := run(string(source), object)
	if err != nil {
		fail(fmt.Errorf("%s: %w", *script, err))
	}
	if err := json.NewEncoder(os.Stdout).Encode(result); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "argocd-health: %v\n", err)
	os.Exit(1)
}

// readObject decodes the object as the controller holds it: integers are
// int64 (unstructured.Unstructured), other numbers float64.
func readObject(r io.Reader) (map[string]any, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber()
	var object map[string]any
	if err := decoder.Decode(&object); err != nil {
		return nil, err
	}
	return object, nil
}

func run(script string, object map[string]any) (*health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, err
		}
	}
	preloadSafeOs(l)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, object))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	return healthOf(l.Get(-1))
}

// preloadSafeOs makes require("os") return os.time and os.date alone, the os
// functions Argo CD gives health checks, and leaves no global os.
func preloadSafeOs(l *lua.LState) {
	full := l.NewTable()
	l.Push(l.NewFunction(lua.OpenOs))
	l.Call(0, 1)
	if opened, ok := l.Get(-1).(*lua.LTable); ok {
		full = opened
	}
	l.Pop(1)
	l.SetGlobal(lua.OsLibName, lua.LNil)
	if loaded, ok := l.GetField(l.Get(lua.RegistryIndex), "_LOADED").(*lua.LTable); ok {
		loaded.RawSetString(lua.OsLibName, lua.LNil)
	}
	safe := l.NewTable()
	for _, name := range []string{"time", "date"} {
		safe.RawSetString(name, full.RawGetString(name))
	}
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(safe)
		return 1
	})
}

func healthOf(value lua.LValue) (*health, error) {
	switch value.Type() {
	case lua.LTNil:
		return &health{}, nil
	case lua.LTTable:
	default:
		return nil, fmt.Errorf("expect table output from Lua script, not %s", value.Type())
	}
	table := value.(*lua.LTable)
	status, ok := table.RawGetString("status").(lua.LString)
	if !ok || !knownStatuses[string(status)] {
		return &health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	result := &health{Status: string(status)}
	switch message := table.RawGetString("message").(type) {
	case lua.LString:
		result.Message = string(message)
	case *lua.LNilType:
	default:
		return nil, fmt.Errorf("message is a %s, not a string", message.Type())
	}
	return result, nil
}

func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return lua.LNumber(i)
		}
		f, _ := v.Float64()
		return lua.LNumber(f)
	case []any:
		array := l.CreateTable(len(v), 0)
		for _, item := range v {
			array.Append(toLua(l, item))
		}
		return array
	case map[string]any:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), toLua(l, item))
		}
		return table
	}
	return lua.LNil
}
