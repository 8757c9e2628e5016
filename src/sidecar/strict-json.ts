// The sidecar reads request bodies with the strict JSON parser Portcullis
// reads every untrusted JSON text with; it lives in src/compiler, below the
// sidecar and the audit trail, which both use it.
export { numberRefusal, parseStrictJson, StrictJsonError } from '../compiler/strict-json.ts';
