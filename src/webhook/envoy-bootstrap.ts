// The Envoy bootstrap injected next to every agent: an HTTP forward proxy on
// loopback that the agent's HTTP_PROXY / HTTPS_PROXY point at. Plain HTTP
// requests are inspected to the parameter (ext_authz with the body, then
// ext_proc for sanitize), CONNECT tunnels are authorized by host and port, and
// anything the authz sidecar does not allow never leaves the pod. Pure: the
// output is protojson for envoy.config.bootstrap.v3.Bootstrap, checked against
// go-control-plane's types by hack/tools/envoy-check.

export const PORTS = {
  /** Envoy's admin interface, on loopback only. */
  envoyAdmin: 15000,
  /** The forward proxy the agent's HTTP_PROXY points at, on loopback only. */
  proxy: 15001,
  /** Envoy's readiness for the kubelet, on the pod's address: GET /ready, answered by Envoy itself, and nothing else. */
  envoyReady: 15002,
  /** The authz sidecar's gRPC server (ext_authz and ext_proc). */
  authzGrpc: 15010,
  /** The authz sidecar's decision listener (/v1/authorize, /readyz, /metrics), on loopback only. */
  authzHttp: 15020,
  /** The authz sidecar's status listener (GET /healthz, /readyz, /metrics) on the pod's address: probes and Prometheus. */
  authzStatus: 15021,
} as const;

export interface BootstrapOptions {
  /** Largest request body sent to ext_authz for inspection; a larger one is denied, never truncated. */
  maxRequestBytes: number;
  /** How long Envoy waits for a decision before failing closed. */
  authzTimeoutMs: number;
  /** Upstream request timeout. */
  requestTimeoutMs: number;
  /** Names the node in Envoy's logs (the pod). */
  nodeId: string;
}

export const DEFAULT_BOOTSTRAP_OPTIONS: BootstrapOptions = {
  maxRequestBytes: 1024 * 1024,
  authzTimeoutMs: 500,
  requestTimeoutMs: 60_000,
  nodeId: 'portcullis-agent',
};

const seconds = (ms: number): string => `${(ms / 1000).toFixed(3).replace(/\.?0+$/, '')}s`;

const loopback = (port: number): Record<string, unknown> => ({ socket_address: { address: '127.0.0.1', port_value: port } });

// The forward proxy's DNS cache: the filter and the cluster must name the same one.
const DNS_CACHE = { name: 'portcullis_dns', dns_lookup_family: 'V4_PREFERRED', max_hosts: 1024 };

function authzService(timeoutMs: number): Record<string, unknown> {
  return { envoy_grpc: { cluster_name: 'portcullis_authz' }, timeout: seconds(timeoutMs) };
}

function httpFilters(options: BootstrapOptions): Record<string, unknown>[] {
  return [
    {
      name: 'envoy.filters.http.ext_authz',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz',
        transport_api_version: 'V3',
        grpc_service: authzService(options.authzTimeoutMs),
        // Fail closed: no answer is a deny.
        failure_mode_allow: false,
        status_on_error: { code: 'Forbidden' },
        with_request_body: { max_request_bytes: options.maxRequestBytes, allow_partial_message: false, pack_as_bytes: true },
        clear_route_cache: false,
      },
    },
    // After ext_authz, which denies: ext_proc decides the call again to rewrite a
    // sanitized request to its redacted params, and redacts the answer when the
    // decision asks for it. Answer bodies are sent only when the sidecar asks
    // (mode_override: BUFFERED for JSON and text, STREAMED for event streams).
    {
      name: 'envoy.filters.http.ext_proc',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor',
        grpc_service: authzService(options.authzTimeoutMs),
        // Fail closed: a stream error or timeout is a 500, never an unredacted pass.
        failure_mode_allow: false,
        processing_mode: {
          request_header_mode: 'SEND',
          request_body_mode: 'BUFFERED',
          request_trailer_mode: 'SKIP',
          response_header_mode: 'SEND',
          response_body_mode: 'NONE',
          response_trailer_mode: 'SKIP',
        },
        allow_mode_override: true,
        message_timeout: seconds(options.authzTimeoutMs),
      },
    },
    {
      name: 'envoy.filters.http.dynamic_forward_proxy',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig',
        dns_cache_config: DNS_CACHE,
      },
    },
    { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
  ];
}

function connectionManager(options: BootstrapOptions): Record<string, unknown> {
  return {
    '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
    stat_prefix: 'portcullis_outbound',
    codec_type: 'AUTO',
    request_timeout: seconds(options.requestTimeoutMs),
    stream_idle_timeout: '300s',
    // CONNECT arrives as HTTP/1.1 upgrade; the route below tunnels it once ext_authz allowed the host.
    upgrade_configs: [{ upgrade_type: 'CONNECT' }],
    access_log: [
      {
        name: 'envoy.access_loggers.stdout',
        typed_config: { '@type': 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog' },
      },
    ],
    route_config: {
      name: 'portcullis_outbound',
      virtual_hosts: [
        {
          name: 'any_destination',
          domains: ['*'],
          routes: [
            {
              match: { connect_matcher: {} },
              route: { cluster: 'portcullis_forward', upgrade_configs: [{ upgrade_type: 'CONNECT', connect_config: {} }], timeout: '0s' },
            },
            { match: { prefix: '/' }, route: { cluster: 'portcullis_forward', timeout: seconds(options.requestTimeoutMs) } },
          ],
        },
      ],
    },
    http_filters: httpFilters(options),
  };
}

/**
 * The only listener on the pod's address: the kubelet probes there, not on loopback, where the
 * proxy and the admin interface are. It answers `/ready` with 200 once Envoy serves its listeners
 * and everything else with 404; it proxies nothing.
 */
function readinessListener(): Record<string, unknown> {
  return {
    name: 'portcullis_ready',
    address: { socket_address: { address: '0.0.0.0', port_value: PORTS.envoyReady } },
    filter_chains: [{
      filters: [{
        name: 'envoy.filters.network.http_connection_manager',
        typed_config: {
          '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
          stat_prefix: 'portcullis_ready',
          route_config: {
            name: 'portcullis_ready',
            virtual_hosts: [{
              name: 'ready',
              domains: ['*'],
              routes: [
                { match: { path: '/ready' }, direct_response: { status: 200, body: { inline_string: 'ok\n' } } },
                { match: { prefix: '/' }, direct_response: { status: 404 } },
              ],
            }],
          },
          http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } }],
        },
      }],
    }],
  };
}

export function envoyBootstrap(overrides: Partial<BootstrapOptions> = {}): Record<string, unknown> {
  const options = { ...DEFAULT_BOOTSTRAP_OPTIONS, ...overrides };
  return {
    node: { id: options.nodeId, cluster: 'portcullis' },
    admin: { address: loopback(PORTS.envoyAdmin) },
    static_resources: {
      listeners: [
        {
          name: 'portcullis_outbound',
          address: loopback(PORTS.proxy),
          filter_chains: [
            { filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: connectionManager(options) }] },
          ],
        },
        readinessListener(),
      ],
      clusters: [
        {
          name: 'portcullis_authz',
          type: 'STATIC',
          connect_timeout: '1s',
          typed_extension_protocol_options: {
            'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
              '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
              explicit_http_config: { http2_protocol_options: {} },
            },
          },
          load_assignment: {
            cluster_name: 'portcullis_authz',
            endpoints: [{ lb_endpoints: [{ endpoint: { address: loopback(PORTS.authzGrpc) } }] }],
          },
        },
        {
          name: 'portcullis_forward',
          connect_timeout: '5s',
          lb_policy: 'CLUSTER_PROVIDED',
          cluster_type: {
            name: 'envoy.clusters.dynamic_forward_proxy',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig',
              dns_cache_config: DNS_CACHE,
            },
          },
        },
      ],
    },
  };
}
