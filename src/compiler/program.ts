// The generic decision program: one Rego module for every tenant, reading the
// tenant's rules from data.json (see ir.ts). Keeping rules as data keeps the
// bundle small (a thousand rules are a few hundred KiB of JSON, the WASM stays
// the same) and compilation fast, since opa build does not see the rules.

import { precedenceKey } from './ir.ts';

/** Entrypoint of the compiled WASM, as opa build -e takes it. */
export const ENTRYPOINT = 'portcullis/authz/result';

/** File name of the program inside the bundle. */
export const PROGRAM_FILE = 'portcullis/authz.rego';

/** Candidates the program tries one by one before it tries the rest together (see first_rule). */
const LADDER_STEPS = 32;
const LADDER = Array.from({ length: LADDER_STEPS }, (_, j) => `\tk := step(enforced, ${j})`).join('\n} else := k if {\n');

/** Conditions of a rule the program checks one by one before it checks the rest together (see fails). */
const CHECK_STEPS = 8;
const CHECKS = Array.from({ length: CHECK_STEPS }, (_, j) => `\tnot holds_at(r, ${j})`).join('\n} else := true if {\n');

/** The precedence keys of sanitize entries: from the first to the first allow. */
const SANITIZE_FROM = precedenceKey('sanitize', 0);
const SANITIZE_TO = precedenceKey('allow', 0);

/** When no rule decided: how many rules (the first by order) the program explains. */
export const MAX_EXPLAINED = 8;

export const PROGRAM = String.raw`# Portcullis decision program (OPA v1 syntax), the same for every data.portcullis.
#
# It holds no rule of its own: every rule, limit and egress allowance of the
# tenant lives in data.json under data.portcullis, as the compiler normalized
# it, each entry naming the resource it came from ("policy") and its rule
# ("rule"). Raw Rego modules of ToolPolicies live under data.portcullis.custom.
#
# The input is the authorization call as the decision core normalized it: every
# optional field filled in, plus input.signals (the local clock per time zone,
# the threat detectors' findings and regex matches), computed in the core
# because the WASM runtime has no time builtins, the detectors are shared with
# redaction and the runtime compiles regexes again at every evaluation. The core
# computes only the signals of the rules the call can reach.
#
# Precedence: deny > approval_needed > sanitize > allow; deny by default.
package portcullis.authz

rank := {"allow": 1, "sanitize": 2, "approval_needed": 3, "deny": 4}

agent := data.portcullis.agents[input.namespace][input.agent]

default agent_state := "unknown"

agent_state := "suspended" if agent.suspended == true

agent_state := "active" if agent.suspended == false

# A policy applies to the agents of its own namespace that it names, or that hold one of its roles.
applies(p) if p.agents[input.agent]

applies(p) if {
	some role in agent.roles
	p.roles[role]
}

# The rules a call may match, lowest precedence key first (index in ir.ts):
# positions in tool_rules of the rules for the call's action, or of the rules
# that list no action when the call names none or one no rule lists.
tool_rules := data.portcullis.rules[input.namespace][input.tool]

default candidates := []

candidates := c if {
	c := data.portcullis.index[input.namespace][input.tool][input.action]
} else := c if {
	c := data.portcullis.index[input.namespace][input.tool][""]
}

# --- whether a condition holds -------------------------------------------------

# The value at a parameter path; undefined when the path leads to no value (null
# is a value). Two lookups with different defaults tell a missing key from any
# value a caller could send, so no sentinel value can pass for "missing".
param(path) := v if {
	v := object.get(input.params, path, 0)
	v == object.get(input.params, path, 1)
}

present(path) if object.get(input.params, path, 0) == object.get(input.params, path, 1)

same(a, b) if {
	type_name(a) == type_name(b)
	a == b
}

scalar(v) if is_string(v)

scalar(v) if is_number(v)

scalar(v) if is_boolean(v)

# holds(op, c): the condition c, whose op is op, holds for this call. The op
# comes as an argument so that each definition below is chosen by comparing it
# with a constant: every definition of a function is evaluated, and reading
# c.op in each would look it up in c every time. What each one reads, the core
# reads the same way to word reasons (observe.ts).
holds("equals", c) if same(param(c.path), c.value)

holds("oneOf", c) if {
	v := param(c.path)
	some x in c.values
	same(v, x)
}

holds("notOneOf", c) if {
	v := param(c.path)
	scalar(v)
	every x in c.values {
		not same(v, x)
	}
}

# Regexes: the core matches those a call can reach with RE2 patterns it keeps
# compiled, and hands the results in input.signals.regex by the condition's
# signal key (this runtime would compile each pattern again at every
# evaluation). A condition without a result there (past the core's bound, or
# from a core that does not match regexes) is matched here.
holds("regex", c) if input.signals.regex[c.signal] == true

holds("regex", c) if {
	not regex_matched_by_core(c)
	v := param(c.path)
	is_string(v)
	regex.match(c.pattern, v)
}

regex_matched_by_core(c) if is_boolean(input.signals.regex[c.signal])

holds("min", c) if {
	v := param(c.path)
	is_number(v)
	v >= c.bound
}

holds("max", c) if {
	v := param(c.path)
	is_number(v)
	v <= c.bound
}

holds("gt", c) if {
	v := param(c.path)
	is_number(v)
	v > c.bound
}

holds("lt", c) if {
	v := param(c.path)
	is_number(v)
	v < c.bound
}

holds("exists", c) if {
	c.present == true
	present(c.path)
}

holds("exists", c) if {
	c.present == false
	not present(c.path)
}

holds("time", c) if {
	now := input.signals.clock[c.zone]
	now.day in c.days
	now.minute >= c.start
	now.minute < c.end
}

# The counter holds the calls made in the window before this one.
holds("callsOver", c) if object.get(input.counters.calls, [input.tool, c.window], 0) + 1 <= c.max

holds("delegatedBy", c) if {
	some a in input.delegation
	a in c.agents
}

holds("delegationDepth", c) if count(input.delegation) <= c.max

holds("autonomyLevel", c) if agent.autonomyLevel >= c.min

holds("threat", c) if {
	some t in c.threats
	count(input.signals.threats[t]) > 0
}

holds("userAttribute", c) if same(param(c.path), input.user.attributes[c.attribute])

held(c) := true if holds(c.op, c)

else := false

# --- rules ---------------------------------------------------------------------

# A rule decides when it speaks of this call (namespace, tool, action: it is a
# candidate), its policy applies to the agent, and every condition holds,
# checked cheap ones first (RuleData.check). Words for why come from explanations.
in_play(r) := p if {
	p := data.portcullis.policies[input.namespace][r.policy]
	applies(p)
}

condition_holds(i) if {
	c := data.portcullis.conditions[i]
	holds(c.op, c)
}

decides(r, enforced) if {
	in_play(r).enforced == enforced
	not fails(r)
}

# A rule fails at its first condition that does not hold: the else chain checks
# them in order and stops there (every, compiled to WASM, checks them all).
holds_at(r, j) if not r.check[j]

holds_at(r, j) if condition_holds(r.check[j])

fails(r) := true if {
${CHECKS}
} else := true if {
	some j, i in r.check
	j >= ${CHECK_STEPS}
	not condition_holds(i)
}

step(enforced, j) := r.key if {
	r := tool_rules[candidates[j]]
	decides(r, enforced)
}

# The lowest precedence key of the rules that decide: candidates come sorted by
# key, so the first that decides is it, and the rules after it are not tried.
# Each rung of the else chain tries one candidate; past the last rung, the rest
# are tried together.
first_rule(enforced) := k if {
${LADDER}
} else := min(rest) if {
	rest := {r.key |
		some j, i in candidates
		j >= ${LADDER_STEPS}
		r := tool_rules[i]
		decides(r, enforced)
	}
	count(rest) > 0
}

# The lowest key is all the pool needs of the rules: the decision is its minimum.
matched_rules(enforced) := {k} if {
	k := first_rule(enforced)
} else := set()

# --- limits: rate limits and budgets, enforced by the sidecar's counters -------

limit_action_ok(l) if not l.action

limit_action_ok(l) if l.action == input.action

# Missing counters mean no calls so far: a full bucket, nothing spent.
exceeded(l) := {"tokens": tokens} if {
	l.kind == "rate"
	tokens := object.get(input.counters.rate, l.counter, l.burst)
	tokens < 1
}

exceeded(l) := {"spent": spent, "cost": cost} if {
	l.kind == "budget"
	spent := object.get(input.counters.spentUSD, l.counter, 0)
	cost := budget_cost(l)
	spent + cost > l.dailyUSD
}

# A call whose cost cannot be read is over budget: fail closed.
exceeded(l) := {"spent": object.get(input.counters.spentUSD, l.counter, 0), "cost": null} if {
	l.kind == "budget"
	not budget_cost(l)
}

budget_cost(l) := l.costPerCall if is_number(l.costPerCall)

budget_cost(l) := v if {
	l.costPath
	v := param(l.costPath)
	is_number(v)
	v >= 0
}

exceeded_limits(enforced) := {l.key |
	some l in data.portcullis.limits[input.namespace][input.tool]
	limit_action_ok(l)
	p := data.portcullis.policies[input.namespace][l.policy]
	p.enforced == enforced
	applies(p)
	exceeded(l)
}

# --- raw Rego modules: their deny messages deny ---------------------------------

custom_messages(x) := {msg | some msg in data.portcullis.custom[x.id].deny}

denying_modules(enforced) := {x.key |
	some x in data.portcullis.modules
	x.namespace == input.namespace
	p := data.portcullis.policies[x.namespace][x.policy]
	p.enforced == enforced
	applies(p)
	count(custom_messages(x)) > 0
}

custom_in_play(enforced) if {
	some x in data.portcullis.modules
	x.namespace == input.namespace
	p := data.portcullis.policies[x.namespace][x.policy]
	p.enforced == enforced
	applies(p)
}

# --- egress: CONNECT tunnels and other traffic authorized by host and port --------

egress_candidates contains {"entry": a, "enforced": p.enforced} if {
	input.egress
	some a in data.portcullis.egress[input.namespace]
	p := data.portcullis.egressPolicies[input.namespace][a.policy]
	applies(p)
}

host_ok(a) if {
	not a.wildcard
	input.egress.host == a.host
}

# *.example.com: subdomains of example.com, never example.com itself.
host_ok(a) if {
	a.wildcard
	endswith(input.egress.host, concat("", [".", a.host]))
}

port_ok(a) if not a.ports

port_ok(a) if input.egress.port in a.ports

allowing_egress(enforced) := {x.entry.key |
	some x in egress_candidates
	x.enforced == enforced
	host_ok(x.entry)
	port_ok(x.entry)
}

# --- the decision ---------------------------------------------------------------

# Limits decide only for calls a rule decided on: a limit never turns a call no
# rule allows into one that could be approved.
pool(enforced) := (decided | denying_modules(enforced)) | limits_over(enforced, decided) if {
	decided := matched_rules(enforced) | allowing_egress(enforced)
}

limits_over(enforced, decided) := exceeded_limits(enforced) if count(decided) > 0

else := set()

enforced_pool := pool(true)

# Shadow policies can decide only in namespaces that have some (TenantData.shadowed).
shadow_pool := pool(false) if data.portcullis.shadowed[input.namespace]

else := set()

# What the core needs besides the deciding key (it knows every entry by its key):
# the counters a limit saw, the messages of a raw module.
detail(k) := {"observed": exceeded(l)} if {
	some l in data.portcullis.limits[input.namespace][input.tool]
	l.key == k
} else := {"messages": custom_messages(x)} if {
	some x in data.portcullis.modules
	x.key == k
} else := {}

# A shadow policy is in play when it has rules for this call (or egress entries,
# or modules) for this agent: with nothing enforced deciding, its decision is
# recorded and the call let through.
shadow_in_play if {
	data.portcullis.shadowed[input.namespace]
	some i in candidates
	in_play(tool_rules[i]).enforced == false
}

shadow_in_play if {
	data.portcullis.shadowed[input.namespace]
	some x in egress_candidates
	x.enforced == false
}

shadow_in_play if {
	data.portcullis.shadowed[input.namespace]
	custom_in_play(false)
}

outcome := {"source": agent_state, "decision": "deny", "enforced": true} if {
	agent_state != "active"
} else := {"key": k, "enforced": true, "detail": detail(k)} if {
	count(enforced_pool) > 0
	k := min(enforced_pool)
} else := {"key": k, "enforced": false, "detail": detail(k)} if {
	count(shadow_pool) > 0
	k := min(shadow_pool)
} else := {"source": "default", "decision": "deny", "enforced": false} if {
	shadow_in_play
} else := {"source": "default", "decision": "deny", "enforced": true}

# For sanitize (keys of the sanitize band, see precedenceKey in ir.ts), the keys
# of every rule that decides at the winning decision of the winning mode (only
# rules sanitize): the core merges their redactions.
peers := [r.key |
	outcome.key >= ${SANITIZE_FROM}
	outcome.key < ${SANITIZE_TO}
	some i in candidates
	r := tool_rules[i]
	r.decision == "sanitize"
	decides(r, outcome.enforced)
]

# When no rule decided: whether each condition held, for the first rules (by
# order) that spoke of the call; in_play_count tells the core how many spoke of
# it in all. (A rule that decided held every condition: the core needs no more.)
in_play_rules := [r |
	outcome.source == "default"
	some i in candidates
	r := tool_rules[i]
	in_play(r)
]

in_play_count := count(in_play_rules)

explained_rules := [r |
	some r in in_play_rules
	r.order <= cut
] if {
	in_play_count > 0
	cut := sort([x.order | some x in in_play_rules])[min([${MAX_EXPLAINED} - 1, in_play_count - 1])]
} else := []

explanations := [{"key": r.key, "held": [held(c) |
	some i in r.when
	c := data.portcullis.conditions[i]
]} |
	some r in explained_rules
]

result := {
	"outcome": outcome,
	"peers": peers,
	"explanations": explanations,
	"inPlay": in_play_count,
}
`