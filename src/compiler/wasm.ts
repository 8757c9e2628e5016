// Evaluation of a compiled policy through OPA's WASM ABI 1.2 entry point,
// opa_eval (https://www.openpolicyagent.org/docs/wasm, "Evaluation"), the way
// opa-wasm's LoadedPolicy.evaluate does on that ABI, without its per-call
// costs: a TextEncoder and a TextDecoder made for each call, the input encoded
// into a fresh buffer before it is copied into the module's memory, and the
// end of the answer searched byte by byte in JavaScript. The decision core
// calls this on every decision.
import type { LoadedPolicy } from '@open-policy-agent/opa-wasm';

/** The exports of an OPA policy module this calls (ABI 1.2). */
interface PolicyExports {
  opa_eval(reserved: number, entrypoint: number, data: number, input: number, inputLength: number, heap: number, format: number): number;
}

/** The module's memory (a WebAssembly.Memory: the project's TypeScript libraries do not declare WebAssembly). */
interface PolicyMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}

const PAGE = 65_536;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The module's exports when they include opa_eval. opa-wasm keeps the instance, whichever way it was instantiated, in wasmInstance. */
function policyExports(policy: LoadedPolicy): PolicyExports | undefined {
  const instance: unknown = policy.wasmInstance;
  const exports = (instance as { exports?: Record<string, unknown> } | null)?.exports;
  return typeof exports?.opa_eval === 'function' ? (exports as unknown as PolicyExports) : undefined;
}

export class PolicyProgram {
  private readonly policy: LoadedPolicy;
  private readonly entrypoint: number;
  private readonly entrypointName: string;
  /** The module's opa_eval, when its ABI has one (1.2 and later); opa-wasm's evaluate otherwise. */
  private readonly exports: PolicyExports | undefined;
  private readonly memory: PolicyMemory;

  constructor(policy: LoadedPolicy, entrypoint: string) {
    this.policy = policy;
    this.entrypointName = entrypoint;
    const entrypoints = policy.entrypoints as Record<string, number>;
    const id = Object.hasOwn(entrypoints, entrypoint) ? entrypoints[entrypoint] : undefined;
    if (id === undefined) throw new Error(`the policy has no entrypoint ${entrypoint}`);
    this.entrypoint = id;
    this.exports = Number(policy.minorVersion) >= 2 ? policyExports(policy) : undefined;
    const memory: unknown = policy.mem;
    this.memory = memory as PolicyMemory;
  }

  /** The program's result set for the input, as opa-wasm's evaluate returns it. */
  evaluate(input: unknown): unknown {
    if (this.exports === undefined) return this.policy.evaluate(input, this.entrypointName);
    const text = JSON.stringify(input);
    const memory = this.memory;
    // The input goes where the data ends; the program's heap starts after it (what opa-wasm does).
    const inputAddress = Number(this.policy.dataHeapPtr);
    // UTF-8 takes at most 3 bytes per UTF-16 unit: grow first when that might not fit.
    const short = inputAddress + text.length * 3 - memory.buffer.byteLength;
    if (short > 0) memory.grow(Math.ceil(short / PAGE));
    const { written } = encoder.encodeInto(text, new Uint8Array(memory.buffer, inputAddress));
    const resultAddress = this.exports.opa_eval(0, this.entrypoint, this.policy.dataAddr, inputAddress, written, inputAddress + written, 0);
    // The module may have grown its memory while evaluating: take the buffer anew.
    const bytes = new Uint8Array(memory.buffer);
    const end = bytes.indexOf(0, resultAddress);
    return JSON.parse(decoder.decode(bytes.subarray(resultAddress, end < 0 ? bytes.length : end)));
  }
}
