// opa-extauthz is the opa command (runtime, plugin manager, storage, bundle
// and decision-log plugins, topdown evaluator) with an envoy_ext_authz_grpc
// plugin that answers Envoy's ext_authz v3 Check the way opa-envoy-plugin
// does: the CheckRequest becomes the input (its fields under their JSON
// names, plus parsed_path, parsed_query, parsed_body and truncated_body), a
// query prepared once per policy change is evaluated in a read transaction,
// and the decision (a boolean, or an object with allowed, http_status,
// headers and body) becomes the CheckResponse.
//
// The sidecar benchmark runs it as the peer to beat where opa-envoy-plugin's
// own module cannot be fetched; its configuration and policy input are those
// of opa-envoy-plugin, so a binary of the real plugin runs the same benchmark
// unchanged (BENCH_ASSET_OPA_ENVOY_PLUGIN).
//
// Usage: opa-extauthz run --server --config-file CONFIG POLICY.rego
//
//	plugins:
//	  envoy_ext_authz_grpc: { addr: "127.0.0.1:9191", path: envoy/authz/allow }
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/cmd"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/runtime"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/util"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
)

const pluginName = "envoy_ext_authz_grpc"

func main() {
	runtime.RegisterPlugin(pluginName, factory{})
	if err := cmd.RootCommand.Execute(); err != nil {
		os.Exit(1)
	}
}

type config struct {
	Addr  string `json:"addr"`
	Path  string `json:"path"`
	query ast.Body
}

type factory struct{}

func (factory) Validate(_ *plugins.Manager, raw []byte) (any, error) {
	cfg := config{Addr: ":9191", Path: "envoy/authz/allow"}
	if err := util.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", pluginName, err)
	}
	path := strings.Trim(cfg.Path, "/")
	if path == "" {
		return nil, fmt.Errorf("%s: path is empty", pluginName)
	}
	query, err := ast.ParseBody("data." + strings.ReplaceAll(path, "/", "."))
	if err != nil {
		return nil, fmt.Errorf("%s: path %q: %w", pluginName, cfg.Path, err)
	}
	cfg.query = query
	return &cfg, nil
}

func (factory) New(manager *plugins.Manager, c any) plugins.Plugin {
	cfg, ok := c.(*config)
	if !ok {
		panic(fmt.Sprintf("%s: configuration of type %T", pluginName, c))
	}
	p := &server{manager: manager, cfg: cfg, grpc: grpc.NewServer()}
	authv3.RegisterAuthorizationServer(p.grpc, p)
	// A policy change recompiles; the prepared query is made again on the next Check.
	manager.RegisterCompilerTrigger(func(storage.Transaction) { p.prepared.Store(nil) })
	manager.UpdatePluginStatus(pluginName, &plugins.Status{State: plugins.StateNotReady})
	return p
}

type server struct {
	authv3.UnimplementedAuthorizationServer
	manager   *plugins.Manager
	cfg       *config
	grpc      *grpc.Server
	prepared  atomic.Pointer[rego.PreparedEvalQuery]
	preparing sync.Mutex
}

func (p *server) Start(context.Context) error {
	listener, err := net.Listen("tcp", p.cfg.Addr)
	if err != nil {
		return fmt.Errorf("%s: listen on %s: %w", pluginName, p.cfg.Addr, err)
	}
	go func() {
		if err := p.grpc.Serve(listener); err != nil {
			p.manager.Logger().Error("%s: gRPC server stopped: %v", pluginName, err)
		}
	}()
	p.manager.UpdatePluginStatus(pluginName, &plugins.Status{State: plugins.StateOK})
	return nil
}

func (p *server) Stop(context.Context) {
	p.grpc.GracefulStop()
	p.manager.UpdatePluginStatus(pluginName, &plugins.Status{State: plugins.StateNotReady})
}

func (p *server) Reconfigure(context.Context, any) {}

func (p *server) query(ctx context.Context) (*rego.PreparedEvalQuery, error) {
	if pq := p.prepared.Load(); pq != nil {
		return pq, nil
	}
	p.preparing.Lock()
	defer p.preparing.Unlock()
	if pq := p.prepared.Load(); pq != nil {
		return pq, nil
	}
	pq, err := rego.New(
		rego.ParsedQuery(p.cfg.query),
		rego.Compiler(p.manager.GetCompiler()),
		rego.Store(p.manager.Store),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, err
	}
	p.prepared.Store(&pq)
	return &pq, nil
}

func (p *server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	m := metrics.New()
	m.Timer(metrics.ServerHandler).Start()
	defer m.Timer(metrics.ServerHandler).Stop()
	input, err := inputOf(req)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	value, err := ast.InterfaceToValue(input)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	pq, err := p.query(ctx)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	txn, err := p.manager.Store.NewTransaction(ctx)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	defer p.manager.Store.Abort(ctx, txn)
	rs, err := pq.Eval(ctx, rego.EvalParsedInput(value), rego.EvalTransaction(txn), rego.EvalMetrics(m))
	switch {
	case err != nil:
		return nil, status.Error(codes.Internal, err.Error())
	case len(rs) != 1 || len(rs[0].Expressions) != 1:
		return nil, status.Error(codes.Internal, "undefined decision")
	}
	response, err := responseOf(rs[0].Expressions[0].Value)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return response, nil
}

func inputOf(req *authv3.CheckRequest) (map[string]any, error) {
	input := messageMap(req.ProtoReflect())
	input["version"] = map[string]any{"ext_authz": "v3", "encoding": "protojson"}
	httpRequest := req.GetAttributes().GetRequest().GetHttp()
	target, err := url.Parse(httpRequest.GetPath())
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	segments := strings.Split(strings.TrimLeft(target.Path, "/"), "/")
	parsedPath := make([]any, len(segments))
	for i, segment := range segments {
		parsedPath[i] = segment
	}
	parsedQuery := map[string]any{}
	for name, values := range target.Query() {
		list := make([]any, len(values))
		for i, v := range values {
			list[i] = v
		}
		parsedQuery[name] = list
	}
	input["parsed_path"] = parsedPath
	input["parsed_query"] = parsedQuery
	body, truncated, err := parsedBody(httpRequest)
	if err != nil {
		return nil, err
	}
	input["parsed_body"] = body
	input["truncated_body"] = truncated
	return input, nil
}

// parsedBody reads a JSON body (body, or raw_body when Envoy packs it as bytes); a body shorter
// than its content-length was cut at max_request_bytes and is reported truncated, not parsed.
func parsedBody(httpRequest *authv3.AttributeContext_HttpRequest) (any, bool, error) {
	headers := httpRequest.GetHeaders()
	if !strings.Contains(headers["content-type"], "application/json") {
		return nil, false, nil
	}
	body := []byte(httpRequest.GetBody())
	if len(body) == 0 {
		body = httpRequest.GetRawBody()
	}
	if len(body) == 0 {
		return nil, false, nil
	}
	if declared, ok := headers["content-length"]; ok {
		length, err := strconv.ParseInt(declared, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("content-length %q: %w", declared, err)
		}
		if length > int64(len(body)) {
			return nil, true, nil
		}
	}
	var parsed any
	if err := util.UnmarshalJSON(body, &parsed); err != nil {
		return nil, false, fmt.Errorf("body: %w", err)
	}
	return parsed, false, nil
}

// messageMap is the message as protojson would write it, without the JSON text in between:
// fields under their JSON names, 64-bit integers as strings, bytes in base64, enums by name.
func messageMap(message protoreflect.Message) map[string]any {
	out := make(map[string]any, message.Descriptor().Fields().Len())
	message.Range(func(field protoreflect.FieldDescriptor, value protoreflect.Value) bool {
		switch {
		case field.IsMap():
			entries := map[string]any{}
			value.Map().Range(func(key protoreflect.MapKey, v protoreflect.Value) bool {
				entries[key.String()] = scalarOrMessage(field.MapValue(), v)
				return true
			})
			out[field.JSONName()] = entries
		case field.IsList():
			list := value.List()
			items := make([]any, list.Len())
			for i := range items {
				items[i] = scalarOrMessage(field, list.Get(i))
			}
			out[field.JSONName()] = items
		default:
			out[field.JSONName()] = scalarOrMessage(field, value)
		}
		return true
	})
	return out
}

func scalarOrMessage(field protoreflect.FieldDescriptor, value protoreflect.Value) any {
	switch field.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageMap(value.Message())
	case protoreflect.BytesKind:
		return base64.StdEncoding.EncodeToString(value.Bytes())
	case protoreflect.EnumKind:
		if name := field.Enum().Values().ByNumber(value.Enum()); name != nil {
			return string(name.Name())
		}
		return int64(value.Enum())
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.FormatInt(value.Int(), 10)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.FormatUint(value.Uint(), 10)
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return value.Float()
	default:
		return value.Interface()
	}
}

func responseOf(decision any) (*authv3.CheckResponse, error) {
	allowed, fields, err := allowedOf(decision)
	if err != nil {
		return nil, err
	}
	headers, err := headersOf(fields["headers"])
	if err != nil {
		return nil, err
	}
	if allowed {
		return &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: headers}},
		}, nil
	}
	code := int64(typev3.StatusCode_Forbidden)
	if raw, ok := fields["http_status"]; ok {
		number, isNumber := raw.(json.Number)
		if !isNumber {
			return nil, fmt.Errorf("http_status is a %T, not a number", raw)
		}
		if code, err = number.Int64(); err != nil {
			return nil, fmt.Errorf("http_status: %w", err)
		}
		if _, known := typev3.StatusCode_name[int32(code)]; !known {
			return nil, fmt.Errorf("http_status %d is not an HTTP status Envoy knows", code)
		}
	}
	body, _ := fields["body"].(string)
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(code)},
			Headers: headers,
			Body:    body,
		}},
	}, nil
}

func allowedOf(decision any) (bool, map[string]any, error) {
	switch d := decision.(type) {
	case bool:
		return d, map[string]any{}, nil
	case map[string]any:
		allowed, ok := d["allowed"].(bool)
		if !ok {
			return false, nil, errors.New(`the decision object has no boolean "allowed"`)
		}
		return allowed, d, nil
	default:
		return false, nil, fmt.Errorf("the decision is a %T, not a boolean or an object", decision)
	}
}

func headersOf(raw any) ([]*corev3.HeaderValueOption, error) {
	if raw == nil {
		return nil, nil
	}
	fields, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("headers is a %T, not an object", raw)
	}
	headers := make([]*corev3.HeaderValueOption, 0, len(fields))
	for name, value := range fields {
		text, isString := value.(string)
		if !isString {
			return nil, fmt.Errorf("header %s is a %T, not a string", name, value)
		}
		headers = append(headers, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: text}})
	}
	return headers, nil
}
