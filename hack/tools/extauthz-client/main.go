// extauthz-client sends one envoy.service.auth.v3.Authorization/Check request
// built from go-control-plane's generated types, as Envoy's ext_authz HTTP
// filter does, and prints the CheckResponse as protojson. The tests use it to
// prove the sidecar's wire format against Envoy's own definitions.
//
// Usage: extauthz-client -addr HOST:PORT [-request FILE|-] [-repeat N]
//
// With -repeat N it sends the request N times over one connection and prints,
// to stderr, the p50, p99 and max round-trip times (the response printed is
// the last one).
//
// The request file is JSON:
//
//	{"method": "POST", "host": "payments.tools.svc:8080", "path": "/v1/payments?x=1",
//	 "headers": {"content-type": "application/json"}, "body": "{...}", "pack_as_bytes": false,
//	 "truncated": false, "context_extensions": {"k": "v"}}
//
// As Envoy does, the headers map carries the pseudo-headers :method, :path,
// :authority and :scheme next to the request's own headers, lower-cased, and
// x-envoy-auth-partial-body with a body (true when "truncated" says the body
// given is the part Envoy kept).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	auth "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
)

type request struct {
	Method            string            `json:"method"`
	Host              string            `json:"host"`
	Path              string            `json:"path"`
	Scheme            string            `json:"scheme"`
	Headers           map[string]string `json:"headers"`
	Body              string            `json:"body"`
	PackAsBytes       bool              `json:"pack_as_bytes"`
	Truncated         bool              `json:"truncated"`
	ContextExtensions map[string]string `json:"context_extensions"`
}

func readRequest(name string) (*request, error) {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, err
	}
	decoder := json.NewDecoder(strings.NewReader(string(data)))
	decoder.DisallowUnknownFields()
	var r request
	if err := decoder.Decode(&r); err != nil {
		return nil, fmt.Errorf("the request description does not parse: %w", err)
	}
	if r.Scheme == "" {
		r.Scheme = "http"
	}
	return &r, nil
}

// checkRequest builds the CheckRequest the way Envoy's ext_authz filter fills
// AttributeContext.HttpRequest: path with the query, headers lower-cased with
// the pseudo-headers, query and fragment empty (Envoy leaves them so), size -1
// without a body, and the body either as a UTF-8
// string or, with pack_as_bytes, as raw bytes.
func checkRequest(r *request) *auth.CheckRequest {
	headers := map[string]string{":method": r.Method, ":path": r.Path, ":authority": r.Host, ":scheme": r.Scheme}
	for name, value := range r.Headers {
		headers[strings.ToLower(name)] = value
	}
	http := &auth.AttributeContext_HttpRequest{
		Id:       "extauthz-client",
		Method:   r.Method,
		Headers:  headers,
		Path:     r.Path,
		Host:     r.Host,
		Scheme:   r.Scheme,
		Protocol: "HTTP/1.1",
		Size:     -1,
	}
	if r.Body != "" {
		http.Size = int64(len(r.Body))
		if r.PackAsBytes {
			http.RawBody = []byte(r.Body)
		} else {
			http.Body = r.Body
		}
	}
	if r.Body != "" {
		// Envoy adds this header whenever it buffered a body for the check
		// (with_request_body): "true" when it cut it at max_request_bytes.
		headers["x-envoy-auth-partial-body"] = fmt.Sprint(r.Truncated)
	}
	return &auth.CheckRequest{Attributes: &auth.AttributeContext{
		Source:            &auth.AttributeContext_Peer{Address: socket("10.0.0.2", 40000)},
		Destination:       &auth.AttributeContext_Peer{Address: socket("10.0.0.3", 8080)},
		Request:           &auth.AttributeContext_Request{Http: http},
		ContextExtensions: r.ContextExtensions,
	}}
}

func socket(address string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address:       address,
		PortSpecifier: &core.SocketAddress_PortValue{PortValue: port},
	}}}
}

func run() error {
	addr := flag.String("addr", "", "the ext_authz server, HOST:PORT")
	file := flag.String("request", "-", "the request description (JSON), or - for stdin")
	timeout := flag.Duration("timeout", 5*time.Second, "deadline of each Check call")
	repeat := flag.Int("repeat", 1, "send the request this many times and print round-trip times to stderr")
	flag.Parse()
	if *addr == "" {
		return fmt.Errorf("-addr is required")
	}
	r, err := readRequest(*file)
	if err != nil {
		return err
	}
	check := checkRequest(r)
	if err := check.Validate(); err != nil {
		return fmt.Errorf("the CheckRequest does not validate: %w", err)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := auth.NewAuthorizationClient(conn)
	var response *auth.CheckResponse
	times := make([]time.Duration, 0, *repeat)
	for i := 0; i < *repeat; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		started := time.Now()
		response, err = client.Check(ctx, check)
		times = append(times, time.Since(started))
		cancel()
		if err != nil {
			return fmt.Errorf("Check failed: %w", err)
		}
	}
	if *repeat > 1 {
		sort.Slice(times, func(a, b int) bool { return times[a] < times[b] })
		at := func(q float64) time.Duration { return times[int(q*float64(len(times)-1))] }
		fmt.Fprintf(os.Stderr, "checks=%d p50=%s p99=%s max=%s\n", len(times), at(0.5), at(0.99), times[len(times)-1])
	}
	if err := response.Validate(); err != nil {
		return fmt.Errorf("the CheckResponse does not validate: %w", err)
	}
	out, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(response)
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "extauthz-client: %v\n", err)
		os.Exit(1)
	}
}
