// The little of the Kubernetes API the sidecar uses — read JSON, create an
// object, and follow a watch — on node:https with one kept-alive connection
// pool. Every answer is bounded (a body, a watch event), every request has a
// deadline and a watch an idle limit, and every failure names the request.
import type { IncomingMessage } from 'node:http';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { ApiConnection } from './kube-config.ts';

/** A ConfigMap holds at most 1 MiB; its JSON (binaryData in base64, escaped text) stays well under this. */
export const MAX_BODY_BYTES = 8 * 1024 * 1024;
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Of an error answer, only this much is read: it is a Status, a few hundred bytes. */
const MAX_ERROR_BYTES = 64 * 1024;

export type Query = Readonly<Record<string, string | number | boolean | undefined>>;

/** The API server answered with an error (or a watch sent an ERROR event): its status and the Status' reason. */
export class KubeApiError extends Error {
  readonly status: number;
  readonly reason: string | undefined;

  constructor(message: string, status: number, reason: string | undefined) {
    super(message);
    this.name = 'KubeApiError';
    this.status = status;
    this.reason = reason;
  }
}

/** The request failed before an answer: no connection, a deadline passed, or the answer broke the bounds. */
export class KubeRequestError extends Error {
  constructor(message: string, options?: { cause: unknown }) {
    super(message, options);
    this.name = 'KubeRequestError';
  }
}

/** A line over the bound, or not UTF-8. */
export class LineError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LineError';
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Splits a byte stream into lines (UTF-8, without the newline), refusing any line over `maxBytes`. */
export class LineBuffer {
  private readonly maxBytes: number;
  private parts: Buffer[] = [];
  private size = 0;

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  /** The complete lines this chunk ends; throws LineError for a line over the bound or not UTF-8. */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let end = chunk.indexOf(0x0a, start); end !== -1; end = chunk.indexOf(0x0a, start)) {
      const piece = chunk.subarray(start, end);
      this.ensureRoom(piece.length);
      lines.push(decodeLine(this.size === 0 ? piece : Buffer.concat([...this.parts, piece])));
      this.parts = [];
      this.size = 0;
      start = end + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.ensureRoom(rest.length);
      this.parts.push(rest);
      this.size += rest.length;
    }
    return lines;
  }

  /** Bytes of a line not yet ended. */
  get pending(): number {
    return this.size;
  }

  private ensureRoom(more: number): void {
    if (this.size + more > this.maxBytes) throw new LineError(`a line is over ${this.maxBytes} bytes`);
  }
}

function decodeLine(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new LineError('a line is not UTF-8');
  }
}

function statusOf(text: string): { reason?: string; message?: string } {
  try {
    const status: unknown = JSON.parse(text);
    if (typeof status !== 'object' || status === null) return {};
    const { reason, message } = status as { reason?: unknown; message?: unknown };
    return { ...(typeof reason === 'string' ? { reason } : {}), ...(typeof message === 'string' ? { message } : {}) };
  } catch {
    return {};
  }
}

/** The error of a Status (an error answer's body, or a watch ERROR event's object). */
export function apiErrorOf(request: string, status: number, body: unknown): KubeApiError {
  const fields = typeof body === 'string' ? statusOf(body) : typeof body === 'object' && body !== null ? statusOf(JSON.stringify(body)) : {};
  const detail = fields.message ?? (typeof body === 'string' ? body.slice(0, 200) : '');
  return new KubeApiError(`${request}: ${status}${fields.reason === undefined ? '' : ` ${fields.reason}`}${detail === '' ? '' : `: ${detail}`}`, status, fields.reason);
}

export interface KubeClientOptions {
  requestTimeoutMs?: number;
  maxBodyBytes?: number;
}

export interface WatchOptions {
  signal?: AbortSignal;
  /** Ends the watch with an error when nothing (not even a bookmark) arrives for this long. */
  idleTimeoutMs: number;
}

export class KubeClient {
  readonly connection: ApiConnection;
  private readonly agent: HttpAgent;
  private readonly requestTimeoutMs: number;
  private readonly maxBodyBytes: number;

  constructor(connection: ApiConnection, options: KubeClientOptions = {}) {
    this.connection = connection;
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.maxBodyBytes = options.maxBodyBytes ?? MAX_BODY_BYTES;
    const tls = {
      ...(connection.ca === undefined ? {} : { ca: connection.ca }),
      ...(connection.cert === undefined || connection.key === undefined ? {} : { cert: connection.cert, key: connection.key }),
      ...(connection.tlsServerName === undefined ? {} : { servername: connection.tlsServerName }),
      rejectUnauthorized: !connection.insecureSkipTlsVerify,
    };
    this.agent = connection.server.protocol === 'https:' ? new HttpsAgent({ keepAlive: true, ...tls }) : new HttpAgent({ keepAlive: true });
  }

  /** GET `path` and the JSON it answers. */
  async get(path: string, query: Query = {}, signal?: AbortSignal): Promise<unknown> {
    return this.json('GET', path, query, undefined, signal);
  }

  /** POST `body` to `path` (create) and the JSON it answers. */
  async create(path: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
    return this.json('POST', path, {}, body, signal);
  }

  /**
   * Follows a watch: calls `onEvent` with each event's JSON, in order. Resolves
   * when the server ends the watch; rejects on an error answer, an event that
   * is not JSON or is over the body bound, `onEvent` throwing, or silence for
   * longer than the idle limit.
   */
  async watch(path: string, query: Query, onEvent: (event: unknown) => void, options: WatchOptions): Promise<void> {
    const name = `watch ${path}`;
    const response = await this.send('GET', path, { ...query, watch: true }, undefined, { deadlineMs: options.idleTimeoutMs, signal: options.signal });
    if (response.statusCode !== 200) throw apiErrorOf(name, response.statusCode ?? 0, await this.readBody(response, MAX_ERROR_BYTES, name).catch(() => ''));
    const lines = new LineBuffer(this.maxBodyBytes);
    await new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const fail = (error: Error): void => {
        clearTimeout(timer);
        response.destroy();
        reject(error);
      };
      const idle = (): void => {
        clearTimeout(timer);
        timer = setTimeout(() => { fail(new KubeRequestError(`${name}: nothing arrived for ${options.idleTimeoutMs} ms`)); }, options.idleTimeoutMs);
      };
      idle();
      response.on('data', (chunk: Buffer) => {
        idle();
        try {
          for (const line of lines.push(chunk)) {
            if (line.trim() !== '') onEvent(parseJson(line, `${name}: an event`));
          }
        } catch (error) {
          fail(error instanceof LineError ? new KubeRequestError(`${name}: ${error.message}`) : asError(error, name));
        }
      });
      response.on('end', () => {
        clearTimeout(timer);
        if (lines.pending > 0) reject(new KubeRequestError(`${name}: the watch ended within an event`));
        else resolve();
      });
      response.on('error', (error) => { fail(new KubeRequestError(`${name}: ${error.message}`, { cause: error })); });
      response.on('close', () => {
        if (!response.complete) fail(new KubeRequestError(`${name}: the connection closed within the watch`));
      });
    });
  }

  /** Closes the kept-alive connections. */
  close(): void {
    this.agent.destroy();
  }

  private async json(method: string, path: string, query: Query, body: unknown, signal: AbortSignal | undefined): Promise<unknown> {
    const name = `${method} ${path}`;
    const response = await this.send(method, path, query, body, { deadlineMs: this.requestTimeoutMs, signal });
    const status = response.statusCode ?? 0;
    if (status < 200 || status > 299) throw apiErrorOf(name, status, await this.readBody(response, MAX_ERROR_BYTES, name).catch(() => ''));
    return parseJson(await this.readBody(response, this.maxBodyBytes, name), `${name}: the answer`);
  }

  /** Sends the request; resolves with the answer's head, or rejects if it has not come within `deadlineMs`. */
  private async send(method: string, path: string, query: Query, body: unknown, limits: { deadlineMs: number; signal: AbortSignal | undefined }): Promise<IncomingMessage> {
    const name = `${method} ${path}`;
    const url = this.urlOf(path, query);
    const token = await this.connection.token?.();
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = {
      accept: 'application/json',
      'user-agent': 'portcullis-sidecar',
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) }),
    };
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<IncomingMessage>((resolve, reject) => {
      const request = send(url, { method, headers, agent: this.agent, ...(limits.signal === undefined ? {} : { signal: limits.signal }) }, (response) => {
        clearTimeout(deadline);
        resolve(response);
      });
      const deadline = setTimeout(() => { request.destroy(new KubeRequestError(`${name}: no answer within ${limits.deadlineMs} ms`)); }, limits.deadlineMs);
      request.on('error', (error) => {
        clearTimeout(deadline);
        reject(error instanceof KubeRequestError || error.name === 'AbortError' ? error : new KubeRequestError(`${name}: ${error.message}`, { cause: error }));
      });
      request.end(payload);
    });
  }

  private urlOf(path: string, query: Query): URL {
    const url = new URL(this.connection.server.href);
    url.pathname = `${url.pathname.replace(/\/$/, '')}${path}`;
    for (const [key, value] of Object.entries(query)) if (value !== undefined) url.searchParams.set(key, String(value));
    return url;
  }

  /** The whole answer as text, failing past `maxBytes` or the request deadline. */
  private readBody(response: IncomingMessage, maxBytes: number, name: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const deadline = setTimeout(() => { response.destroy(new KubeRequestError(`${name}: the answer did not end within ${this.requestTimeoutMs} ms`)); }, this.requestTimeoutMs);
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBytes) response.destroy(new KubeRequestError(`${name}: the answer is over ${maxBytes} bytes`));
        else chunks.push(chunk);
      });
      response.on('end', () => {
        clearTimeout(deadline);
        try {
          resolve(utf8.decode(Buffer.concat(chunks)));
        } catch {
          reject(new KubeRequestError(`${name}: the answer is not UTF-8`));
        }
      });
      response.on('error', (error) => {
        clearTimeout(deadline);
        reject(error instanceof KubeRequestError ? error : new KubeRequestError(`${name}: ${error.message}`, { cause: error }));
      });
      response.on('close', () => {
        clearTimeout(deadline);
        if (!response.complete) reject(new KubeRequestError(`${name}: the connection closed within the answer`));
      });
    });
  }
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new KubeRequestError(`${what} is not JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function asError(error: unknown, name: string): Error {
  if (error instanceof Error) return error;
  return new KubeRequestError(`${name}: ${String(error)}`);
}
