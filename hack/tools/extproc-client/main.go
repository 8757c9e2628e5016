// extproc-client drives one envoy.service.ext_proc.v3.ExternalProcessor/Process
// stream with go-control-plane's generated types, as Envoy's ext_proc HTTP
// filter does for one request and its answer, and prints what Envoy would
// send upstream and downstream as JSON. The tests use it to prove the
// sidecar's ext_proc against Envoy's own definitions.
//
// Usage: extproc-client -addr HOST:PORT [-scenario FILE|-] [-repeat N]
//
// The scenario file is JSON:
//
//	{"request": {"method": "POST", "host": "ehr.tools.svc", "path": "/v1/records",
//	             "headers": {"content-type": "application/json"}, "body": "{...}"},
//	 "response": {"status": 200, "headers": {"content-type": "text/event-stream"},
//	              "chunks": ["data: ...", "..."]},
//	 "processing_mode": {"request_body_mode": "BUFFERED", "response_body_mode": "NONE"},
//	 "allow_mode_override": true}
//
// processing_mode and allow_mode_override default to what the Portcullis
// bootstrap configures (above). As Envoy does, the client sends the request
// headers (pseudo-headers first, names lower-cased, values in raw_value) with
// protocol_config in the first message; the request body in one message when
// request_body_mode is BUFFERED; then the response headers; then the response
// body as one message (BUFFERED) or chunk by chunk (STREAMED), in the mode the
// server's mode_override asked for when allow_mode_override is on. It applies
// every header and body mutation with Envoy's rules (x-envoy-*, :method,
// :authority, :scheme and host are not set; pseudo-headers and host are not
// removed; in BUFFERED mode a content-length that disagrees with the mutated
// body is a local reply, as Envoy rejects the mutation). An immediate_response
// ends the exchange; a stream closed with an error is what Envoy answers 500.
//
// With -repeat N it runs the scenario N times, one stream each over one
// connection, and prints to stderr the p50, p99 and max time Envoy would wait
// on the sidecar for the request (headers and body) and for the answer.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extproc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

type scenario struct {
	Request struct {
		Method  string            `json:"method"`
		Host    string            `json:"host"`
		Path    string            `json:"path"`
		Scheme  string            `json:"scheme"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	} `json:"request"`
	Response struct {
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Chunks  []string          `json:"chunks"`
	} `json:"response"`
	ProcessingMode *struct {
		RequestBodyMode  string `json:"request_body_mode"`
		ResponseBodyMode string `json:"response_body_mode"`
	} `json:"processing_mode"`
	AllowModeOverride *bool `json:"allow_mode_override"`
}

// header is one header in order, as Envoy's header map keeps them.
type header struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type message struct {
	Headers []header `json:"headers"`
	Body    string   `json:"body"`
	// Chunks: the response body as it went downstream, chunk by chunk (STREAMED).
	Chunks []string `json:"chunks,omitempty"`
}

type immediate struct {
	// Phase: the message the sidecar answered with immediate_response.
	Phase   string   `json:"phase"`
	Status  int32    `json:"status"`
	Headers []header `json:"headers"`
	Body    string   `json:"body"`
	Details string   `json:"details"`
}

type outcome struct {
	Upstream         *message   `json:"upstream_request,omitempty"`
	Downstream       *message   `json:"downstream_response,omitempty"`
	Immediate        *immediate `json:"immediate_response,omitempty"`
	StreamError      string     `json:"stream_error,omitempty"`
	RequestBodyMode  string     `json:"request_body_mode"`
	ResponseBodyMode string     `json:"response_body_mode"`
	requestDuration  time.Duration
	responseDuration time.Duration
}

func readScenario(name string) (*scenario, error) {
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
	var s scenario
	if err := decoder.Decode(&s); err != nil {
		return nil, fmt.Errorf("the scenario does not parse: %w", err)
	}
	if s.Request.Scheme == "" {
		s.Request.Scheme = "http"
	}
	if s.Response.Status == 0 {
		s.Response.Status = 200
	}
	return &s, nil
}

func bodyMode(name string, fallback filter.ProcessingMode_BodySendMode) (filter.ProcessingMode_BodySendMode, error) {
	if name == "" {
		return fallback, nil
	}
	value, ok := filter.ProcessingMode_BodySendMode_value[name]
	if !ok {
		return 0, fmt.Errorf("unknown body mode %q", name)
	}
	return filter.ProcessingMode_BodySendMode(value), nil
}

// headerMap keeps headers in order: pseudo-headers first, then the rest sorted, lower-cased.
func headerMap(pseudo []header, rest map[string]string) []header {
	out := append([]header{}, pseudo...)
	names := make([]string, 0, len(rest))
	for name := range rest {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		out = append(out, header{Key: strings.ToLower(name), Value: rest[name]})
	}
	return out
}

func toProto(headers []header) *core.HeaderMap {
	out := &core.HeaderMap{}
	for _, h := range headers {
		out.Headers = append(out.Headers, &core.HeaderValue{Key: h.Key, RawValue: []byte(h.Value)})
	}
	return out
}

func get(headers []header, key string) (string, bool) {
	for _, h := range headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return "", false
}

func remove(headers []header, key string) []header {
	out := headers[:0:0]
	for _, h := range headers {
		if h.Key != key {
			out = append(out, h)
		}
	}
	return out
}

// mutate applies a HeaderMutation with the rules of Envoy's ext_proc filter (default mutation_rules).
func mutate(headers []header, mutation *extproc.HeaderMutation) []header {
	if mutation == nil {
		return headers
	}
	for _, name := range mutation.GetRemoveHeaders() {
		name = strings.ToLower(name)
		if strings.HasPrefix(name, ":") || name == "host" {
			continue
		}
		headers = remove(headers, name)
	}
	for _, option := range mutation.GetSetHeaders() {
		key := strings.ToLower(option.GetHeader().GetKey())
		if strings.HasPrefix(key, "x-envoy") || key == ":method" || key == ":authority" || key == ":scheme" || key == "host" {
			continue
		}
		value := string(option.GetHeader().GetRawValue())
		if value == "" {
			value = option.GetHeader().GetValue()
		}
		replaced := false
		for i := range headers {
			if headers[i].Key == key && option.GetAppendAction() != core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				headers[i].Value = value
				replaced = true
			}
		}
		if !replaced {
			headers = append(headers, header{Key: key, Value: value})
		}
	}
	return headers
}

// bodyOf applies a body mutation to a chunk.
func bodyOf(chunk string, mutation *extproc.BodyMutation) string {
	switch m := mutation.GetMutation().(type) {
	case *extproc.BodyMutation_Body:
		return string(m.Body)
	case *extproc.BodyMutation_ClearBody:
		if m.ClearBody {
			return ""
		}
	}
	return chunk
}

type exchange struct {
	stream extproc.ExternalProcessor_ProcessClient
}

// call sends one message and waits for its answer, which must be the expected kind or an immediate response.
func (e exchange) call(request *extproc.ProcessingRequest, want string) (*extproc.ProcessingResponse, error) {
	if err := request.Validate(); err != nil {
		return nil, fmt.Errorf("the ProcessingRequest does not validate: %w", err)
	}
	if err := e.stream.Send(request); err != nil {
		return nil, fmt.Errorf("sending %s: %w", want, err)
	}
	response, err := e.stream.Recv()
	if err != nil {
		return nil, err
	}
	if err := response.Validate(); err != nil {
		return nil, fmt.Errorf("the ProcessingResponse to %s does not validate: %w", want, err)
	}
	got := ""
	switch response.GetResponse().(type) {
	case *extproc.ProcessingResponse_RequestHeaders:
		got = "request_headers"
	case *extproc.ProcessingResponse_RequestBody:
		got = "request_body"
	case *extproc.ProcessingResponse_ResponseHeaders:
		got = "response_headers"
	case *extproc.ProcessingResponse_ResponseBody:
		got = "response_body"
	case *extproc.ProcessingResponse_ImmediateResponse:
		got = "immediate_response"
	}
	if got != want && got != "immediate_response" {
		return nil, fmt.Errorf("the sidecar answered %s with %s", want, got)
	}
	return response, nil
}

func immediateOf(phase string, response *extproc.ProcessingResponse) *immediate {
	reply := response.GetImmediateResponse()
	if reply == nil {
		return nil
	}
	return &immediate{Phase: phase, Status: int32(reply.GetStatus().GetCode()), Headers: mutate(nil, reply.GetHeaders()), Body: string(reply.GetBody()), Details: reply.GetDetails()}
}

// contentLengthAgrees is Envoy's check in BUFFERED mode: a content-length that disagrees with the mutated body rejects the mutation.
func contentLengthAgrees(headers []header, body string) error {
	value, ok := get(headers, "content-length")
	if !ok {
		return nil
	}
	if n, err := strconv.Atoi(value); err != nil || n != len(body) {
		return fmt.Errorf("content-length %s does not match the %d bytes of the mutated body: Envoy rejects the mutation with a local reply", value, len(body))
	}
	return nil
}

func run1(ctx context.Context, client extproc.ExternalProcessorClient, s *scenario) (*outcome, error) {
	requestMode, responseMode := filter.ProcessingMode_BUFFERED, filter.ProcessingMode_NONE
	var err error
	if s.ProcessingMode != nil {
		if requestMode, err = bodyMode(s.ProcessingMode.RequestBodyMode, filter.ProcessingMode_BUFFERED); err != nil {
			return nil, err
		}
		if responseMode, err = bodyMode(s.ProcessingMode.ResponseBodyMode, filter.ProcessingMode_NONE); err != nil {
			return nil, err
		}
	}
	allowOverride := s.AllowModeOverride == nil || *s.AllowModeOverride
	stream, err := client.Process(ctx)
	if err != nil {
		return nil, err
	}
	e := exchange{stream: stream}
	out := &outcome{}
	defer func() {
		out.RequestBodyMode = requestMode.String()
		out.ResponseBodyMode = responseMode.String()
	}()

	// Request headers, with the protocol configuration in the first message as Envoy sends it.
	requestHeaders := headerMap([]header{{":authority", s.Request.Host}, {":path", s.Request.Path}, {":method", s.Request.Method}, {":scheme", s.Request.Scheme}}, s.Request.Headers)
	if _, ok := get(requestHeaders, "content-length"); !ok && s.Request.Body != "" {
		requestHeaders = append(requestHeaders, header{"content-length", strconv.Itoa(len(s.Request.Body))})
	}
	started := time.Now()
	response, err := e.call(&extproc.ProcessingRequest{
		Request:        &extproc.ProcessingRequest_RequestHeaders{RequestHeaders: &extproc.HttpHeaders{Headers: toProto(requestHeaders), EndOfStream: s.Request.Body == ""}},
		ProtocolConfig: &extproc.ProtocolConfiguration{RequestBodyMode: requestMode, ResponseBodyMode: responseMode},
	}, "request_headers")
	if err != nil {
		return out.closed(err)
	}
	if out.Immediate = immediateOf("request_headers", response); out.Immediate != nil {
		return out, nil
	}
	requestHeaders = mutate(requestHeaders, response.GetRequestHeaders().GetResponse().GetHeaderMutation())
	if override := response.GetModeOverride(); override != nil && allowOverride {
		requestMode, responseMode = override.GetRequestBodyMode(), override.GetResponseBodyMode()
	}
	body := s.Request.Body
	if body != "" && requestMode == filter.ProcessingMode_BUFFERED {
		response, err = e.call(&extproc.ProcessingRequest{Request: &extproc.ProcessingRequest_RequestBody{RequestBody: &extproc.HttpBody{Body: []byte(body), EndOfStream: true}}}, "request_body")
		if err != nil {
			return out.closed(err)
		}
		if out.Immediate = immediateOf("request_body", response); out.Immediate != nil {
			return out, nil
		}
		common := response.GetRequestBody().GetResponse()
		requestHeaders = mutate(requestHeaders, common.GetHeaderMutation())
		body = bodyOf(body, common.GetBodyMutation())
		if err := contentLengthAgrees(requestHeaders, body); err != nil {
			return nil, err
		}
	}
	out.requestDuration = time.Since(started)
	out.Upstream = &message{Headers: requestHeaders, Body: body}

	// The answer.
	responseHeaders := headerMap([]header{{":status", strconv.Itoa(s.Response.Status)}}, s.Response.Headers)
	started = time.Now()
	response, err = e.call(&extproc.ProcessingRequest{Request: &extproc.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extproc.HttpHeaders{Headers: toProto(responseHeaders), EndOfStream: len(s.Response.Chunks) == 0}}}, "response_headers")
	if err != nil {
		return out.closed(err)
	}
	if out.Immediate = immediateOf("response_headers", response); out.Immediate != nil {
		return out, nil
	}
	responseHeaders = mutate(responseHeaders, response.GetResponseHeaders().GetResponse().GetHeaderMutation())
	if override := response.GetModeOverride(); override != nil && allowOverride {
		responseMode = override.GetResponseBodyMode()
	}
	downstream := &message{Headers: responseHeaders}
	switch {
	case len(s.Response.Chunks) == 0 || responseMode == filter.ProcessingMode_NONE:
		downstream.Chunks = append([]string{}, s.Response.Chunks...)
	case responseMode == filter.ProcessingMode_BUFFERED:
		whole := strings.Join(s.Response.Chunks, "")
		response, err = e.call(&extproc.ProcessingRequest{Request: &extproc.ProcessingRequest_ResponseBody{ResponseBody: &extproc.HttpBody{Body: []byte(whole), EndOfStream: true}}}, "response_body")
		if err != nil {
			return out.closed(err)
		}
		if out.Immediate = immediateOf("response_body", response); out.Immediate != nil {
			return out, nil
		}
		common := response.GetResponseBody().GetResponse()
		downstream.Headers = mutate(downstream.Headers, common.GetHeaderMutation())
		downstream.Chunks = []string{bodyOf(whole, common.GetBodyMutation())}
		if err := contentLengthAgrees(downstream.Headers, downstream.Chunks[0]); err != nil {
			return nil, err
		}
	case responseMode == filter.ProcessingMode_STREAMED:
		// Envoy removes content-length when a streamed body may be mutated.
		downstream.Headers = remove(downstream.Headers, "content-length")
		for i, chunk := range s.Response.Chunks {
			last := i == len(s.Response.Chunks)-1
			response, err = e.call(&extproc.ProcessingRequest{Request: &extproc.ProcessingRequest_ResponseBody{ResponseBody: &extproc.HttpBody{Body: []byte(chunk), EndOfStream: last}}}, "response_body")
			if err != nil {
				return out.closed(err)
			}
			if out.Immediate = immediateOf("response_body", response); out.Immediate != nil {
				// Headers already went downstream: Envoy resets the stream; what passed before stays passed.
				out.Downstream = downstream
				return out, nil
			}
			downstream.Chunks = append(downstream.Chunks, bodyOf(chunk, response.GetResponseBody().GetResponse().GetBodyMutation()))
		}
	default:
		return nil, fmt.Errorf("the client does not drive response_body_mode %s", responseMode)
	}
	out.responseDuration = time.Since(started)
	downstream.Body = strings.Join(downstream.Chunks, "")
	out.Downstream = downstream
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	if _, err := stream.Recv(); err != nil && !errors.Is(err, io.EOF) {
		return out.closed(err)
	}
	return out, nil
}

// closed records a stream the sidecar closed with an error status (Envoy answers 500); other errors are the client's.
func (o *outcome) closed(err error) (*outcome, error) {
	if st, ok := status.FromError(err); ok && !errors.Is(err, io.EOF) {
		o.StreamError = fmt.Sprintf("%s: %s", st.Code(), st.Message())
		return o, nil
	}
	return nil, err
}

func percentiles(times []time.Duration) string {
	sort.Slice(times, func(a, b int) bool { return times[a] < times[b] })
	at := func(q float64) time.Duration { return times[int(q*float64(len(times)-1))] }
	return fmt.Sprintf("p50=%s p99=%s max=%s", at(0.5), at(0.99), times[len(times)-1])
}

func run() error {
	addr := flag.String("addr", "", "the ext_proc server, HOST:PORT")
	file := flag.String("scenario", "-", "the scenario (JSON), or - for stdin")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of each stream")
	repeat := flag.Int("repeat", 1, "run the scenario this many times and print the sidecar's time to stderr")
	flag.Parse()
	if *addr == "" {
		return fmt.Errorf("-addr is required")
	}
	s, err := readScenario(*file)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := extproc.NewExternalProcessorClient(conn)
	var out *outcome
	requestTimes := make([]time.Duration, 0, *repeat)
	responseTimes := make([]time.Duration, 0, *repeat)
	for i := 0; i < *repeat; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		out, err = run1(ctx, client, s)
		cancel()
		if err != nil {
			return err
		}
		requestTimes = append(requestTimes, out.requestDuration)
		responseTimes = append(responseTimes, out.responseDuration)
	}
	if *repeat > 1 {
		fmt.Fprintf(os.Stderr, "streams=%d request %s\n", len(requestTimes), percentiles(requestTimes))
		fmt.Fprintf(os.Stderr, "streams=%d response %s\n", len(responseTimes), percentiles(responseTimes))
	}
	encoded, err := json.Marshal(out)
	if err != nil {
		return err
	}
	fmt.Println(string(encoded))
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "extproc-client: %v\n", err)
		os.Exit(1)
	}
}
