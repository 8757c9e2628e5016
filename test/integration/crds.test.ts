// The CRDs as users meet them: kubectl apply against a real API server.

import { join } from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import { ensureNamespace, kubectl, REPO_ROOT } from '../harness/control-plane.ts';

const plane = inject('controlPlane');
const NAMESPACE = 'crd-validation';

beforeAll(async () => {
  await ensureNamespace(plane, NAMESPACE);
});

function manifest(kind: string, name: string, spec: unknown): string {
  return stringify({ apiVersion: 'portcullis.dev/v1alpha1', kind, metadata: { name, namespace: NAMESPACE }, spec });
}

const owner = { name: 'Dana Ruiz', email: 'dana@example.com' };
const subjects = { agents: ['finance-agent'] };
const policy = (name: string, spec: Record<string, unknown>): string => manifest('ToolPolicy', name, { subjects, ...spec });
const ruleWith = (when: unknown[]): Record<string, unknown> => ({ rules: [{ name: 'r1', tool: 'stripe-payments', decision: 'allow', when }] });

describe('the examples of the design', () => {
  it('apply as written with kubectl', async () => {
    const result = await kubectl(plane, ['apply', '--validate=strict', '-f', join(REPO_ROOT, 'config', 'samples')]);
    expect(result.stdout).toContain('toolpolicy.portcullis.dev/payments created');
    expect(result.stdout).toContain('agentidentity.portcullis.dev/finance-agent created');
    expect(result.stdout).toContain('egressrule.portcullis.dev/llm-egress created');
  });

  it('include an agent namespace NetworkPolicy the API server accepts as written', async () => {
    const result = await kubectl(plane, ['apply', '--validate=strict', '--dry-run=server', '-f', join(REPO_ROOT, 'config', 'network', 'agent-namespace.yaml')]);
    expect(result.stdout).toContain('networkpolicy.networking.k8s.io/portcullis-agent-egress created (server dry run)');
  });

  it('list with their printer columns', async () => {
    const policies = await kubectl(plane, ['get', 'toolpolicies', '-n', 'finance']);
    const [header, row] = policies.stdout.trim().split('\n');
    expect(header?.split(/\s+/)).toEqual(['NAME', 'READY', 'MODE', 'RULES', 'AGE']);
    expect(row).toMatch(/^payments\s+enforce\s+\d+s$/);

    const agents = await kubectl(plane, ['get', 'agentid', '-n', 'finance', '-o', 'wide']);
    expect(agents.stdout.split('\n')[0]?.split(/\s+/)).toEqual([
      'NAME', 'READY', 'SERVICEACCOUNT', 'OWNER', 'AUTONOMY', 'SUSPENDED', 'REASON', 'AGE',
    ]);
    expect(agents.stdout).toMatch(/finance-agent\s+finance-agent\s+dana@example.com\s+1\s+false/);
  });

  it('are found by the portcullis category and short names', async () => {
    const all = await kubectl(plane, ['get', 'portcullis', '-n', 'finance', '-o', 'name']);
    expect(all.stdout.trim().split('\n').sort()).toEqual([
      'agentidentity.portcullis.dev/finance-agent',
      'agentidentity.portcullis.dev/planner-agent',
      'egressrule.portcullis.dev/llm-egress',
      'toolpolicy.portcullis.dev/payments',
    ]);
    const short = await kubectl(plane, ['get', 'tp,egr', '-n', 'finance', '-o', 'name']);
    expect(short.stdout).toContain('toolpolicy.portcullis.dev/payments');
  });

  it('keep every field through a round trip, with defaults filled in', async () => {
    const got = await kubectl(plane, ['get', 'toolpolicy', 'payments', '-n', 'finance', '-o', 'json']);
    const spec = (JSON.parse(got.stdout) as { spec: { rules: { name: string; redact?: unknown[] }[]; rateLimits: unknown[] } }).spec;
    expect(spec.rules.map((r) => r.name)).toEqual(['small-payments', 'over-limit', 'no-coerced-payments', 'office-hours-export', 'ehr-read']);
    expect(spec.rules[4]?.redact).toEqual(['ssn', 'email', 'credit_card', { param: 'notes' }]);
    expect(spec.rateLimits).toEqual([{ tool: 'stripe-payments', rps: 3, burst: 3, onExceed: 'approval_needed' }]);
    const egress = await kubectl(plane, ['get', 'egressrule', 'llm-egress', '-n', 'finance', '-o', 'jsonpath={.spec.mode}']);
    expect(egress.stdout).toBe('enforce');
  });
});

interface Malformed {
  name: string;
  manifest: string;
  /** Every one of these must appear in the API server's answer. */
  messages: string[];
}

const malformed: Malformed[] = [
  {
    name: 'an unknown decision is rejected, naming the supported ones',
    manifest: policy('unknown-decision', { rules: [{ name: 'r1', tool: 't', decision: 'maybe' }] }),
    messages: ['spec.rules[0].decision: Unsupported value: "maybe"', '"allow", "deny", "sanitize", "approval_needed"'],
  },
  {
    name: 'an AgentIdentity without an owner is rejected',
    manifest: manifest('AgentIdentity', 'no-owner', { serviceAccountName: 'x' }),
    messages: ['spec.owner: Required value'],
  },
  {
    name: 'an owner without an e-mail is rejected',
    manifest: manifest('AgentIdentity', 'owner-no-email', { serviceAccountName: 'x', owner: { name: 'Dana' } }),
    messages: ['spec.owner.email: Required value'],
  },
  {
    name: 'min greater than max is rejected at the condition',
    manifest: policy('min-over-max', ruleWith([{ param: 'amount', min: 10, max: 5 }])),
    messages: ['spec.rules[0].when[0]', 'min must not be greater than max'],
  },
  {
    name: 'duplicate rule names are rejected',
    manifest: policy('duplicate-rules', {
      rules: [{ name: 'r1', tool: 't', decision: 'allow' }, { name: 'r1', tool: 'u', decision: 'deny' }],
    }),
    messages: ['spec.rules[1]: Duplicate value: {"name":"r1"}'],
  },
  {
    name: 'a list over its bound is rejected',
    manifest: manifest('AgentIdentity', 'many-roles', {
      serviceAccountName: 'x',
      owner,
      roles: Array.from({ length: 65 }, (_, i) => `role-${i}`),
    }),
    messages: ['spec.roles: Too many: 65: must have at most 64 items'],
  },
  {
    name: 'a malformed duration is rejected',
    manifest: manifest('AgentIdentity', 'bad-ttl', { serviceAccountName: 'x', owner, tokenTTL: '10 minutes' }),
    messages: ['spec.tokenTTL: Invalid value: "10 minutes"'],
  },
  {
    name: 'a duration out of range is rejected with the range',
    manifest: manifest('AgentIdentity', 'long-ttl', { serviceAccountName: 'x', owner, tokenTTL: '48h' }),
    messages: ['spec.tokenTTL', 'between 1m and 24h'],
  },
  {
    name: 'an unknown field is rejected by strict field validation',
    manifest: policy('unknown-field', { rulez: [] }),
    messages: ['unknown field "spec.rulez"'],
  },
  {
    name: 'a string where a number belongs is rejected',
    manifest: policy('wrong-type', ruleWith([{ param: 'amount', max: 'lots' }])),
    messages: ['spec.rules[0].when[0].max', 'must be of type number'],
  },
  {
    name: 'an egress host with a scheme is rejected',
    manifest: manifest('EgressRule', 'host-with-scheme', { subjects, allow: [{ host: 'https://api.openai.com' }] }),
    messages: ['spec.allow[0].host', 'must be a host name without a scheme'],
  },
  {
    name: 'an egress host with a path is rejected',
    manifest: manifest('EgressRule', 'host-with-path', { subjects, allow: [{ host: 'api.openai.com/v1' }] }),
    messages: ['spec.allow[0].host', 'must be a host name without a path'],
  },
  {
    name: 'an empty subjects block is rejected',
    manifest: manifest('ToolPolicy', 'empty-subjects', { subjects: {}, rules: [] }),
    messages: ['spec.subjects', 'must name at least one agent or role'],
  },
  {
    name: 'an unknown time zone is rejected',
    manifest: policy('bad-zone', ruleWith([{ time: { start: '09:00', end: '17:00', timeZone: 'Mars/Olympus' } }])),
    messages: ['spec.rules[0].when[0].time.timeZone', 'unknown time zone Mars/Olympus'],
  },
  {
    name: 'a time window that ends before it starts is rejected',
    manifest: policy('backwards-window', ruleWith([{ time: { start: '17:00', end: '09:00' } }])),
    messages: ['spec.rules[0].when[0].time', 'start must be before end'],
  },
  {
    name: 'a condition stating two kinds at once is rejected',
    manifest: policy('two-kinds', ruleWith([{ param: 'amount', max: 1, delegatedBy: ['planner-agent'] }])),
    messages: ['spec.rules[0].when[0]', 'must state exactly one of: param, time'],
  },
  {
    name: 'approval settings on a rule that does not ask for approval are rejected',
    manifest: policy('stray-approval', {
      rules: [{ name: 'r1', tool: 't', decision: 'allow', approval: { approvers: ['group:leads'] } }],
    }),
    messages: ['spec.rules[0]', 'approval goes only with decision approval_needed'],
  },
  {
    name: 'a tool declared both as HTTP and MCP is rejected',
    manifest: policy('two-transports', {
      tools: [{ name: 'ehr', http: { host: 'ehr.tools.svc' }, mcp: { host: 'ehr-mcp.tools.svc' } }],
    }),
    messages: ['spec.tools[0]', 'must declare exactly one of http or mcp'],
  },
];

describe('malformed manifests', () => {
  it.each(malformed)('$name', async ({ manifest: text, messages }) => {
    const result = await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: text, allowFailure: true });
    expect(result.code).not.toBe(0);
    for (const message of messages) expect(result.stderr).toContain(message);
    // Nothing was stored.
    const listed = await kubectl(plane, ['get', 'portcullis', '-n', NAMESPACE, '-o', 'name']);
    expect(listed.stdout.trim()).toBe('');
  });
});
