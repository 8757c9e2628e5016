// The one source of truth for Portcullis' API: the CRDs under crds/ and the
// TypeScript types in types.generated.ts are both generated from this file by
// hack/gen-api.ts, and the test command fails when either has drifted.

import type { CelRule, Schema } from './openapi.ts';
import {
  anyScalar,
  bool,
  cel,
  enumOf,
  int,
  list,
  listMap,
  num,
  obj,
  str,
  stringMap,
  titled,
} from './openapi.ts';

export const GROUP = 'portcullis.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const CATEGORY = 'portcullis';

export const DECISIONS = ['allow', 'deny', 'sanitize', 'approval_needed'] as const;
export const MODES = ['enforce', 'shadow'] as const;
export const WEEKDAYS = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'] as const;
export const THREATS = ['prompt_injection', 'sql_injection', 'path_traversal', 'pii'] as const;
export const REDACTION_DETECTORS = ['ssn', 'email', 'credit_card', 'phone', 'iban', 'pii'] as const;
/** Why the sidecar could not decide a call with a loaded bundle: what a read-only action may fail open on. */
export const FAIL_OPEN_CAUSES = ['counters_unavailable', 'evaluation_error'] as const;
/** Asymmetric JWS algorithms a user token may be signed with: never none, never HMAC (a public key is no secret). */
export const USER_TOKEN_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

// A Kubernetes object name (DNS-1123 label) and a DNS-1123 subdomain.
const DNS_LABEL = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
const DNS_SUBDOMAIN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
// Go's duration syntax restricted to the units that make sense here.
const DURATION = '^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$';
// An IANA time zone name such as UTC, Europe/Paris or America/Argentina/Buenos_Aires.
const TIME_ZONE = '^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$';
// A tool or action name: what agents and MCP servers call tools.
const TOOL_NAME = '^[A-Za-z0-9][A-Za-z0-9_.:/-]*$';
// A parameter path: dot-separated keys; a key holding a dot cannot be addressed.
const PARAM_PATH = '^[^.]+(\\.[^.]+)*$';
// A host name or a wildcard for its subdomains, lowercase, no scheme, port or path.
const EGRESS_HOST = '^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
const CLOCK = '^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$';

function duration(description: string, min: string, max: string): Schema {
  return str(description, {
    maxLength: 32,
    pattern: DURATION,
    'x-kubernetes-validations': [
      // The pattern reports malformed values; this rule speaks only of well-formed ones.
      cel(
        `!self.matches('${DURATION.replaceAll('\\', '\\\\')}') || (duration(self) >= duration('${min}') && duration(self) <= duration('${max}'))`,
        `must be a duration (such as 90s, 10m or 1h30m) between ${min} and ${max}`,
      ),
    ],
  });
}

function timeZone(description: string): Schema {
  return str(description, {
    maxLength: 64,
    pattern: TIME_ZONE,
    'x-kubernetes-validations': [
      // getHours fails for a zone the API server's tz database does not know.
      cel("timestamp('2000-01-01T00:00:00Z').getHours(self) >= 0", 'must be an IANA time zone name such as UTC or America/New_York'),
    ],
  });
}

const name = (description: string): Schema => str(description, { maxLength: 63, minLength: 1, pattern: DNS_LABEL });
const toolName = (description: string): Schema => str(description, { maxLength: 128, minLength: 1, pattern: TOOL_NAME });
const mode = enumOf('enforce decides and blocks; shadow decides and records, but lets every call through.', MODES, {
  default: 'enforce',
});

const subjects = titled(
  'Subjects',
  obj(
    'Which agents of this namespace the resource applies to: agents named here, and agents holding any of the roles. At least one of the two lists must be non-empty.',
    {
      agents: list('AgentIdentity names in this namespace.', name('An AgentIdentity name.'), {
        maxItems: 256,
        'x-kubernetes-list-type': 'set',
      }),
      roles: list('Roles; an agent holding any of them is a subject.', str('A role.', { maxLength: 128, minLength: 1 }), {
        maxItems: 64,
        'x-kubernetes-list-type': 'set',
      }),
    },
    {
      'x-kubernetes-validations': [
        cel(
          "(has(self.agents) && size(self.agents) > 0) || (has(self.roles) && size(self.roles) > 0)",
          'must name at least one agent or role',
        ),
      ],
    },
  ),
);

export const CONDITION_KINDS = [
  'param',
  'time',
  'callsOver',
  'delegatedBy',
  'delegationDepth',
  'userAttribute',
  'autonomyLevel',
  'threat',
] as const;
export const PARAM_OPERATORS = ['equals', 'oneOf', 'notOneOf', 'regex', 'min', 'max', 'gt', 'lt', 'exists'] as const;

const has = (field: string): string => `has(self.${field})`;

// equals, oneOf and notOneOf hold values of any scalar type, which a structural
// schema cannot type; CEL cannot see untyped fields, so the rules below speak
// only of the typed ones and the compiler checks the rest (reported in status).
const typedOperators = ['regex', 'min', 'max', 'gt', 'lt', 'exists'] as const;

const conditionRules: CelRule[] = [
  cel(
    `[${CONDITION_KINDS.map(has).join(', ')}].exists_one(x, x)`,
    `must state exactly one of: ${CONDITION_KINDS.join(', ')}`,
  ),
  cel(
    `${has('param')} || ![${typedOperators.map(has).join(', ')}].exists(x, x)`,
    `${typedOperators.join(', ')} go only with param`,
  ),
  cel(`${has('userAttribute')} == ${has('equalsParam')}`, 'userAttribute and equalsParam go together'),
  cel('!has(self.min) || !has(self.max) || self.min <= self.max', 'min must not be greater than max'),
  cel('!has(self.gt) || !has(self.lt) || self.gt < self.lt', 'gt must be less than lt'),
];

const scalarList = (description: string): Schema =>
  list(description, anyScalar('A string, number or boolean.'), { maxItems: 256, minItems: 1 });

const condition = titled(
  'RuleCondition',
  obj(
    'One condition of a rule. A rule holds when all its conditions hold. A condition on a missing parameter, or on a value of the wrong type, does not hold.',
    {
      param: str('A dotted path into the call parameters, e.g. invoice.amount.', {
        maxLength: 256,
        pattern: PARAM_PATH,
      }),
      equals: anyScalar('The parameter equals this value (same type and value).'),
      oneOf: scalarList('The parameter equals one of these values.'),
      notOneOf: scalarList('The parameter is present and equals none of these values.'),
      regex: str('An RE2 regular expression the whole parameter value (a string) must match.', {
        maxLength: 1024,
        minLength: 1,
      }),
      min: num('The parameter is a number and >= min.'),
      max: num('The parameter is a number and <= max.'),
      gt: num('The parameter is a number and > gt.'),
      lt: num('The parameter is a number and < lt.'),
      exists: bool('true: the parameter is present; false: it is absent.'),
      time: titled(
        'TimeWindow',
        obj(
          'The call happens on one of the days, between start (inclusive) and end (exclusive), in the time zone.',
          {
            days: list('Days of the week; all days when omitted.', enumOf('A day.', WEEKDAYS), {
              maxItems: 7,
              'x-kubernetes-list-type': 'set',
            }),
            start: str('HH:MM, inclusive.', { maxLength: 5, pattern: CLOCK }),
            end: str('HH:MM, exclusive; 24:00 is the end of the day.', { maxLength: 5, pattern: CLOCK }),
            timeZone: timeZone('IANA time zone of start and end; UTC when omitted.'),
          },
          {
            required: ['start', 'end'],
            'x-kubernetes-validations': [cel('self.start < self.end', 'start must be before end')],
          },
        ),
      ),
      callsOver: titled(
        'CallWindow',
        obj(
          'The agent made at most max calls to this tool within the sliding window, this call included.',
          {
            window: duration('How far back calls are counted.', '1s', '744h'),
            max: int('Most calls allowed in the window.', { minimum: 1, maximum: 1_000_000 }),
          },
          { required: ['window', 'max'] },
        ),
      ),
      delegatedBy: list(
        'The call was requested, directly or through others, by one of these agents.',
        name('An agent id.'),
        { maxItems: 64, minItems: 1, 'x-kubernetes-list-type': 'set' },
      ),
      delegationDepth: obj(
        'The delegation chain behind the call is at most max agents long.',
        { max: int('Longest chain allowed.', { minimum: 0, maximum: 16 }) },
        { required: ['max'] },
      ),
      userAttribute: str('An attribute of the invoking user, compared with the parameter named by equalsParam.', {
        maxLength: 128,
        minLength: 1,
      }),
      equalsParam: str('A dotted parameter path compared with userAttribute.', { maxLength: 256, pattern: PARAM_PATH }),
      autonomyLevel: obj(
        'The agent autonomy level is at least min.',
        { min: int('Lowest autonomy level.', { minimum: 0, maximum: 3 }) },
        { required: ['min'] },
      ),
      threat: list(
        'The call parameters show one of these threat signals.',
        enumOf('A detector.', THREATS),
        { maxItems: THREATS.length, minItems: 1, 'x-kubernetes-list-type': 'set' },
      ),
    },
    { 'x-kubernetes-validations': conditionRules },
  ),
);

// A string or an object: no structural type fits both, so the compiler checks it.
const redaction = {
  description: `What sanitize redacts: a detector (${REDACTION_DETECTORS.join(', ')}) applied to every parameter, or {param: PATH} to redact one parameter whole.`,
  // Parenthesized: the generator appends [] for the list.
  tsType: `(${REDACTION_DETECTORS.map((d) => `'${d}'`).join(' | ')} | { param: string })`,
  'x-kubernetes-preserve-unknown-fields': true,
} satisfies Schema;

const rule = titled(
  'PolicyRule',
  obj(
    'A rule: when a call to the tool (and one of the actions) meets every condition, the rule decides.',
    {
      name: name('Unique within the policy; decisions name it.'),
      tool: toolName('The tool the rule speaks of.'),
      actions: list('Actions of the tool; every action when omitted.', toolName('An action.'), {
        maxItems: 64,
        'x-kubernetes-list-type': 'set',
      }),
      decision: enumOf('What the rule decides when it matches.', DECISIONS),
      when: list('Conditions, all of which must hold.', condition, { maxItems: 32 }),
      approval: titled(
        'ApprovalSpec',
        obj(
          'Who may approve, and how long a request waits (approval_needed only).',
          {
            approvers: list(
              'Approvers: user:NAME or group:NAME.',
              str('An approver.', { maxLength: 256, pattern: '^(user|group):.+$' }),
              { maxItems: 32, minItems: 1, 'x-kubernetes-list-type': 'set' },
            ),
            ttl: duration('How long a pending request lives.', '1m', '168h'),
          },
          { required: ['approvers'] },
        ),
      ),
      redact: list('What to redact from the parameters (sanitize only).', redaction, { maxItems: 64 }),
      redactResponse: list(
        "Detectors applied to the tool's answer (JSON, text or text/event-stream) before the agent reads it: every match is replaced by its marker. Allow and sanitize only; enforced by the sidecar's Envoy ext_proc filter.",
        enumOf('A detector.', REDACTION_DETECTORS),
        { maxItems: REDACTION_DETECTORS.length, minItems: 1, 'x-kubernetes-list-type': 'set' },
      ),
    },
    {
      required: ['name', 'tool', 'decision'],
      'x-kubernetes-validations': [
        cel("!has(self.approval) || self.decision == 'approval_needed'", 'approval goes only with decision approval_needed'),
        cel("!has(self.redactResponse) || self.decision in ['allow', 'sanitize']", 'redactResponse goes only with decision allow or sanitize'),
      ],
    },
  ),
);

const readOnly = bool('The action changes nothing; a policy may let read-only actions fail open (failOpen).');
const failOpen = list(
  `When the sidecar has the bundle but cannot decide a call of this read-only action for one of these causes (${FAIL_OPEN_CAUSES.join(', ')}), the call goes through unchecked, recorded as fail-open (rule portcullis:fail-open). Only with readOnly: true. evaluation_error can be provoked by a call crafted to make the policy fail: name it only where that exposure is accepted.`,
  enumOf('A cause.', FAIL_OPEN_CAUSES),
  { maxItems: FAIL_OPEN_CAUSES.length, minItems: 1, 'x-kubernetes-list-type': 'set' },
);
const failOpenNeedsReadOnly = cel('!has(self.failOpen) || (has(self.readOnly) && self.readOnly)', 'failOpen goes only with readOnly: true');

const toolAction = titled(
  'ToolAction',
  obj(
    'An HTTP action of a tool: requests with this method and path are this action; params come from the JSON body and the query.',
    {
      name: toolName('The action name rules refer to.'),
      method: enumOf('HTTP method.', ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']),
      path: str('Request path; a trailing /* matches any suffix.', { maxLength: 1024, pattern: '^/[^?#]*$' }),
      readOnly,
      failOpen,
    },
    { required: ['name', 'method', 'path'], 'x-kubernetes-validations': [failOpenNeedsReadOnly] },
  ),
);

const mcpAction = titled(
  'McpAction',
  obj(
    'What an MCP tool (a tools/call name) of the server is: the tools of the server not listed here are neither read-only nor fail-open.',
    {
      name: toolName('The MCP tool name, which tools/call names and rules list as the action.'),
      readOnly,
      failOpen,
    },
    { required: ['name'], 'x-kubernetes-validations': [failOpenNeedsReadOnly] },
  ),
);

const toolDeclaration = titled(
  'ToolDeclaration',
  obj(
    'How requests on the wire become calls of this tool. A tool name means the same in the whole tenant.',
    {
      name: toolName('The tool name.'),
      http: obj(
        'Plain HTTP tool: requests to this host (and port) are this tool.',
        {
          host: str('Host name.', { maxLength: 253, pattern: DNS_SUBDOMAIN }),
          port: int('Port; any port when omitted.', { minimum: 1, maximum: 65535 }),
          actions: listMap('Actions by method and path.', toolAction, 'name', { maxItems: 128 }),
        },
        { required: ['host'] },
      ),
      mcp: obj(
        'MCP server (streamable HTTP): a tools/call request names the action; its arguments are the params.',
        {
          host: str('Host name.', { maxLength: 253, pattern: DNS_SUBDOMAIN }),
          port: int('Port; any port when omitted.', { minimum: 1, maximum: 65535 }),
          path: str('Endpoint path.', { maxLength: 1024, pattern: '^/[^?#]*$' }),
          actions: listMap('What some of the server\'s tools are (read-only, fail-open), by name.', mcpAction, 'name', { maxItems: 256 }),
        },
        { required: ['host'] },
      ),
    },
    {
      required: ['name'],
      'x-kubernetes-validations': [cel('has(self.http) != has(self.mcp)', 'must declare exactly one of http or mcp')],
    },
  ),
);

const rateLimit = titled(
  'RateLimit',
  obj(
    'A token bucket per agent and tool (and action, when given).',
    {
      tool: toolName('The tool.'),
      action: toolName('One action of the tool; all actions when omitted.'),
      rps: num('Tokens added per second.', { minimum: 0, exclusiveMinimum: true, maximum: 100_000 }),
      burst: int('Bucket size.', { minimum: 1, maximum: 100_000 }),
      onExceed: enumOf('Decision for a call over the limit.', ['deny', 'approval_needed'], { default: 'deny' }),
    },
    { required: ['tool', 'rps'] },
  ),
);

const budget = titled(
  'Budget',
  obj(
    'Spend per agent and tool per day.',
    {
      tool: toolName('The tool.'),
      dailyUSD: num('Most spent per day, in US dollars.', { minimum: 0, maximum: 1_000_000_000 }),
      costParam: str('A dotted parameter path holding the cost of the call in US dollars.', {
        maxLength: 256,
        pattern: PARAM_PATH,
      }),
      costPerCall: num('A fixed cost per call in US dollars.', { minimum: 0, maximum: 1_000_000 }),
      timeZone: timeZone('Where the day starts; UTC when omitted.'),
      onExceed: enumOf('Decision for a call over the budget.', ['deny', 'approval_needed'], { default: 'deny' }),
    },
    {
      required: ['tool', 'dailyUSD'],
      'x-kubernetes-validations': [
        cel('has(self.costParam) != has(self.costPerCall)', 'must state exactly one of costParam or costPerCall'),
      ],
    },
  ),
);

const regoModule = titled(
  'RegoModule',
  obj(
    'A raw Rego module compiled into the tenant bundle; its deny rules add deny reasons.',
    {
      name: str('Module name, used in error messages.', { maxLength: 63, pattern: DNS_LABEL }),
      module: str('Rego source (OPA v1 syntax).', { maxLength: 65_536, minLength: 1 }),
    },
    { required: ['name', 'module'] },
  ),
);

const egressAllow = titled(
  'EgressAllow',
  obj(
    'A destination the agents may reach.',
    {
      host: str('A host name, or *.DOMAIN for its subdomains (not DOMAIN itself). No scheme, port or path.', {
        maxLength: 253,
        minLength: 1,
        pattern: EGRESS_HOST,
        'x-kubernetes-validations': [
          cel("!self.contains('://')", 'must be a host name without a scheme (no https://)'),
          cel("self.contains('://') || !self.contains('/')", 'must be a host name without a path'),
          cel("self.contains('://') || !self.contains(':')", 'must be a host name without a port (ports go in ports)'),
        ],
      }),
      ports: list('Ports; any port when omitted.', int('A port.', { minimum: 1, maximum: 65535 }), {
        maxItems: 32,
        'x-kubernetes-list-type': 'set',
      }),
    },
    { required: ['host'] },
  ),
);

// metav1.Condition, as every Kubernetes API writes it.
const statusCondition = titled(
  'Condition',
  obj(
    'A condition of the resource (metav1.Condition).',
    {
      type: str('Condition type, e.g. Ready.', { maxLength: 316, pattern: '^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$' }),
      status: enumOf('True, False or Unknown.', ['True', 'False', 'Unknown']),
      observedGeneration: int('The generation the condition was set for.', { minimum: 0 }),
      lastTransitionTime: str('When the status last changed.', { maxLength: 64, format: 'date-time' }),
      reason: str('A CamelCase code for the last transition.', { maxLength: 1024, minLength: 1, pattern: '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$' }),
      message: str('A human-readable explanation.', { maxLength: 32_768 }),
    },
    { required: ['type', 'status', 'lastTransitionTime', 'reason', 'message'] },
  ),
);

const conditions = listMap('Observations of the resource state.', statusCondition, 'type', { maxItems: 16 });
const observedGeneration = int('The generation the status describes.', { minimum: 0 });

// An https URL: user tokens' keys never travel in the clear.
const HTTPS_URL = '^https://[^\\s/?#]+(/[^\\s]*)?$';

const userTokens = titled(
  'UserTokens',
  obj(
    `How the sidecar verifies the token of the user an agent acts for, forwarded by the agent's application in the x-portcullis-user-token header: a JWT signed by the issuer with one of its keys (${USER_TOKEN_ALGORITHMS.join(', ')}), for one of the audiences, not expired. Its claims become user.id and user.attributes, which userAttribute conditions read. A call with a token that does not verify is denied; without this field, any user token is refused.`,
    {
      issuer: str('The iss claim a token must carry, exactly.', { maxLength: 1024, minLength: 1 }),
      audiences: list('A token\'s aud must name at least one of these: the application\'s client id at the issuer.', str('An audience.', { maxLength: 1024, minLength: 1 }), {
        maxItems: 32,
        minItems: 1,
        'x-kubernetes-list-type': 'set',
      }),
      jwksURL: str('The issuer\'s JWKS (https), fetched by the sidecar and cached; fetched again for a key id it does not hold.', {
        maxLength: 2048,
        pattern: HTTPS_URL,
      }),
      jwks: obj(
        'The issuer\'s public keys written here (a JWKS), for an issuer the sidecar cannot reach; rotated by editing them.',
        {
          keys: list('Public JWKs (RSA, EC or OKP); never a private or symmetric key.', obj('A public JWK.', {}, {
            tsType: 'Record<string, unknown>',
            'x-kubernetes-preserve-unknown-fields': true,
          }), { maxItems: 32, minItems: 1 }),
        },
        { required: ['keys'] },
      ),
      algorithms: list(`The algorithms a token may be signed with; all of ${USER_TOKEN_ALGORITHMS.join(', ')} when omitted.`, enumOf('A JWS algorithm.', USER_TOKEN_ALGORITHMS), {
        // A set of an enum holds at most its values; above the generator's tuple limit, so the type stays a list.
        maxItems: 32,
        minItems: 1,
        'x-kubernetes-list-type': 'set',
      }),
      claims: titled(
        'UserTokenClaims',
        obj(
          'Which claims become the user: user.id from the claim named by id, and each user attribute from the top-level claim named (a string, number or boolean; a token whose mapped claim is anything else is refused).',
          {
            id: str('The claim holding the user id (a non-empty string); sub when omitted.', { maxLength: 256, minLength: 1 }),
            attributes: stringMap('User attribute name → the claim it comes from, e.g. region: region.', str('A claim name.', { maxLength: 256, minLength: 1 }), {
              maxProperties: 32,
            }),
          },
        ),
      ),
    },
    {
      required: ['issuer', 'audiences'],
      'x-kubernetes-validations': [cel('has(self.jwksURL) != has(self.jwks)', 'must state exactly one of jwksURL or jwks')],
    },
  ),
);

const agentIdentitySpec = titled(
  'AgentIdentitySpec',
  obj(
    'Binds a ServiceAccount, and so its pods, to an agent identity with a human owner.',
    {
      serviceAccountName: str('Pods running as this ServiceAccount (in this namespace) are this agent.', {
        maxLength: 253,
        minLength: 1,
        pattern: DNS_SUBDOMAIN,
      }),
      owner: titled(
        'Owner',
        obj(
          'The human who answers for the agent.',
          {
            name: str('Full name.', { maxLength: 256, minLength: 1 }),
            email: str('E-mail address.', { maxLength: 254, pattern: '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$' }),
          },
          { required: ['name', 'email'] },
        ),
      ),
      purpose: str('What the agent is for.', { maxLength: 1024 }),
      roles: list('Roles policies match on.', str('A role.', { maxLength: 128, minLength: 1 }), {
        maxItems: 64,
        'x-kubernetes-list-type': 'set',
      }),
      scopes: list('Scopes granted in the agent token.', str('A scope.', { maxLength: 256, minLength: 1 }), {
        maxItems: 64,
        'x-kubernetes-list-type': 'set',
      }),
      attributes: stringMap('Free-form attributes of the agent.', str('A value.', { maxLength: 1024 }), {
        maxProperties: 64,
      }),
      autonomyLevel: int('0 assisted .. 3 autonomous within bounds.', { minimum: 0, maximum: 3, default: 0 }),
      tokenTTL: duration('Lifetime of the agent tokens.', '1m', '24h'),
      suspended: bool('Kill switch: true denies every call of this agent and refuses its tokens.', { default: false }),
      revokedBefore: str('Tokens issued before this time are refused.', { maxLength: 64, format: 'date-time' }),
      userTokens,
    },
    { required: ['serviceAccountName', 'owner'] },
  ),
);

const toolPolicySpec = titled(
  'ToolPolicySpec',
  obj(
    'Which calls to which tools the subjects may make. Nothing is allowed unless a rule allows it.',
    {
      subjects,
      mode,
      tools: listMap('Tools this policy declares.', toolDeclaration, 'name', { maxItems: 64 }),
      rules: listMap('Rules; when several match, deny > approval_needed > sanitize > allow.', rule, 'name', {
        maxItems: 1000,
      }),
      rateLimits: list('Token-bucket limits.', rateLimit, { maxItems: 64 }),
      budgets: list('Daily spend limits.', budget, { maxItems: 64 }),
      rego: listMap('Raw Rego modules, for advanced users.', regoModule, 'name', { maxItems: 16 }),
    },
    { required: ['subjects'] },
  ),
);

const egressRuleSpec = titled(
  'EgressRuleSpec',
  obj(
    'Destinations the subjects may reach through tunnels (CONNECT) and other traffic that cannot be inspected.',
    {
      subjects,
      mode,
      allow: list('Allowed destinations.', egressAllow, { maxItems: 256, minItems: 1 }),
    },
    { required: ['subjects', 'allow'] },
  ),
);

const approvalRequestSpec = titled(
  'ApprovalRequestSpec',
  obj(
    'A call paused until a human approves or denies it.',
    {
      key: str('The approval key: digest of tenant, agent, tool, action and canonical params.', {
        maxLength: 128,
        minLength: 1,
      }),
      agent: name('The calling agent.'),
      tool: toolName('The tool.'),
      action: toolName('The action.'),
      params: obj('The call parameters, as redacted for display.', {}, {
        tsType: 'Record<string, unknown>',
        'x-kubernetes-preserve-unknown-fields': true,
      }),
      user: str('The invoking user, when known.', { maxLength: 256 }),
      policy: name('The policy whose rule asked for approval.'),
      rule: name('The rule that asked for approval.'),
      reasons: list('Why approval is needed.', str('A reason.', { maxLength: 1024 }), { maxItems: 32 }),
      approvers: list('Who may decide: user:NAME or group:NAME.', str('An approver.', { maxLength: 256 }), {
        maxItems: 32,
      }),
      expiresAt: str('After this time the request is expired.', { maxLength: 64, format: 'date-time' }),
    },
    {
      required: ['key', 'agent', 'tool', 'policy', 'rule'],
      'x-kubernetes-validations': [cel('self == oldSelf', 'spec is immutable')],
    },
  ),
);

function status(title: string, extra: Record<string, Schema>): Schema {
  return titled(title, obj('Observed state, written by the operator.', { observedGeneration, conditions, ...extra }));
}

export interface CrdSourceColumn {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  jsonPath: string;
  description: string;
  priority?: number;
}

export interface CrdSource {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  description: string;
  spec: Schema;
  status: Schema;
  printerColumns: CrdSourceColumn[];
}

const ready: CrdSourceColumn = {
  name: 'Ready',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].status',
  description: 'Whether the resource is in force',
};
const age: CrdSourceColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp', description: 'Time since creation' };
const reason: CrdSourceColumn = {
  name: 'Reason',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
  description: 'Why Ready is what it is',
  priority: 1,
};

export const CRDS: readonly CrdSource[] = [
  {
    kind: 'AgentIdentity',
    plural: 'agentidentities',
    singular: 'agentidentity',
    shortNames: ['agentid', 'aid'],
    description: 'An AI agent: the pods of a ServiceAccount, with a human owner, roles, scopes and a kill switch.',
    spec: agentIdentitySpec,
    status: status('AgentIdentityStatus', {
      suspended: bool('Whether the agent is suspended.'),
      lastTokenIssued: str('When the last token was issued to the agent.', { maxLength: 64, format: 'date-time' }),
      tenant: str('The tenant of the agent.', { maxLength: 63 }),
    }),
    printerColumns: [
      ready,
      { name: 'ServiceAccount', type: 'string', jsonPath: '.spec.serviceAccountName', description: 'Pods of this ServiceAccount are the agent' },
      { name: 'Owner', type: 'string', jsonPath: '.spec.owner.email', description: 'Who answers for the agent' },
      { name: 'Autonomy', type: 'integer', jsonPath: '.spec.autonomyLevel', description: 'Autonomy level', priority: 1 },
      { name: 'Suspended', type: 'boolean', jsonPath: '.spec.suspended', description: 'Kill switch' },
      reason,
      age,
    ],
  },
  {
    kind: 'ToolPolicy',
    plural: 'toolpolicies',
    singular: 'toolpolicy',
    shortNames: ['tp', 'tpol'],
    description: 'Which tool calls agents may make, down to the parameters.',
    spec: toolPolicySpec,
    status: status('ToolPolicyStatus', {
      tenant: str('The tenant whose bundle holds this policy.', { maxLength: 63 }),
      ruleCount: int('Rules compiled into the bundle.', { minimum: 0 }),
      bundleRevision: str('Revision of the tenant bundle that holds this generation.', { maxLength: 128 }),
    }),
    printerColumns: [
      ready,
      { name: 'Mode', type: 'string', jsonPath: '.spec.mode', description: 'enforce or shadow' },
      { name: 'Rules', type: 'integer', jsonPath: '.status.ruleCount', description: 'Rules compiled into the bundle' },
      { name: 'Revision', type: 'string', jsonPath: '.status.bundleRevision', description: 'Bundle revision in force', priority: 1 },
      reason,
      age,
    ],
  },
  {
    kind: 'EgressRule',
    plural: 'egressrules',
    singular: 'egressrule',
    shortNames: ['egr'],
    description: 'Destinations agents may reach through traffic that cannot be inspected (CONNECT tunnels).',
    spec: egressRuleSpec,
    status: status('EgressRuleStatus', {
      tenant: str('The tenant whose bundle holds this rule.', { maxLength: 63 }),
      bundleRevision: str('Revision of the tenant bundle that holds this generation.', { maxLength: 128 }),
    }),
    printerColumns: [
      ready,
      { name: 'Mode', type: 'string', jsonPath: '.spec.mode', description: 'enforce or shadow' },
      reason,
      age,
    ],
  },
  {
    kind: 'ApprovalRequest',
    plural: 'approvalrequests',
    singular: 'approvalrequest',
    shortNames: ['apr', 'approval'],
    description: 'A tool call paused until a human approves or denies it.',
    spec: approvalRequestSpec,
    status: status('ApprovalRequestStatus', {
      state: enumOf('Pending, Approved, Denied or Expired.', ['Pending', 'Approved', 'Denied', 'Expired']),
      decidedBy: str('Who decided.', { maxLength: 256 }),
      decidedAt: str('When.', { maxLength: 64, format: 'date-time' }),
      comment: str('What the approver said.', { maxLength: 4096 }),
    }),
    printerColumns: [
      { name: 'State', type: 'string', jsonPath: '.status.state', description: 'Pending, Approved, Denied or Expired' },
      { name: 'Agent', type: 'string', jsonPath: '.spec.agent', description: 'Calling agent' },
      { name: 'Tool', type: 'string', jsonPath: '.spec.tool', description: 'Tool' },
      { name: 'Action', type: 'string', jsonPath: '.spec.action', description: 'Action' },
      { name: 'Expires', type: 'date', jsonPath: '.spec.expiresAt', description: 'When the request expires', priority: 1 },
      age,
    ],
  },
];
