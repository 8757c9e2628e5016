import { describe, expect, it } from 'vitest';
import { envoyBootstrap, PORTS } from './envoy-bootstrap.ts';

interface Filter {
  name: string;
  typed_config: Record<string, unknown>;
}

function httpFilters(bootstrap: Record<string, unknown>): Filter[] {
  const resources = bootstrap.static_resources as { listeners: { filter_chains: { filters: { typed_config: { http_filters: Filter[] } }[] }[] }[] };
  return resources.listeners[0]?.filter_chains[0]?.filters[0]?.typed_config.http_filters ?? [];
}

describe('envoyBootstrap', () => {
  it('runs ext_authz, then ext_proc, before the proxy forwards anything', () => {
    expect(httpFilters(envoyBootstrap()).map((f) => f.name)).toEqual([
      'envoy.filters.http.ext_authz',
      'envoy.filters.http.ext_proc',
      'envoy.filters.http.dynamic_forward_proxy',
      'envoy.filters.http.router',
    ]);
  });

  it('gives ext_proc whole request bodies and lets the sidecar choose how answers are sent, failing closed', () => {
    const extProc = httpFilters(envoyBootstrap({ authzTimeoutMs: 250 })).find((f) => f.name === 'envoy.filters.http.ext_proc')?.typed_config;
    expect(extProc).toMatchObject({
      grpc_service: { envoy_grpc: { cluster_name: 'portcullis_authz' }, timeout: '0.25s' },
      failure_mode_allow: false,
      allow_mode_override: true,
      message_timeout: '0.25s',
      processing_mode: { request_header_mode: 'SEND', request_body_mode: 'BUFFERED', response_header_mode: 'SEND', response_body_mode: 'NONE' },
    });
  });

  it('puts only its readiness listener on the pod address: GET /ready answered by Envoy itself, 404 for the rest, nothing proxied', () => {
    const resources = envoyBootstrap().static_resources as { listeners: { name: string; address: { socket_address: { address: string; port_value: number } }; filter_chains: { filters: { typed_config: Record<string, unknown> }[] }[] }[] };
    const onPodAddress = resources.listeners.filter((l) => l.address.socket_address.address !== '127.0.0.1');
    expect(onPodAddress.map((l) => [l.name, l.address.socket_address.port_value])).toEqual([['portcullis_ready', PORTS.envoyReady]]);
    const routes = (onPodAddress[0]?.filter_chains[0]?.filters[0]?.typed_config.route_config as { virtual_hosts: { routes: unknown[] }[] }).virtual_hosts[0]?.routes;
    expect(routes).toEqual([
      { match: { path: '/ready' }, direct_response: { status: 200, body: { inline_string: 'ok\n' } } },
      { match: { prefix: '/' }, direct_response: { status: 404 } },
    ]);
    expect((envoyBootstrap().admin as { address: unknown }).address).toEqual({ socket_address: { address: '127.0.0.1', port_value: PORTS.envoyAdmin } });
  });
});
