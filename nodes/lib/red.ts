// The slice of the Node-RED runtime API the adapters use (Node-RED ships no TypeScript types of its own).

export interface NodeMessage {
  _msgid?: string;
  payload?: unknown;
  topic?: string;
  [key: string]: unknown;
}

export type SendFn = (msg: NodeMessage | (NodeMessage | null)[] | null) => void;
export type DoneFn = (err?: Error) => void;

export interface NodeStatus {
  fill?: 'red' | 'green' | 'yellow' | 'blue' | 'grey';
  shape?: 'ring' | 'dot';
  text?: string;
}

export interface Node {
  id: string;
  name?: string;
  credentials?: Record<string, string>;
  on(event: 'input', fn: (msg: NodeMessage, send: SendFn, done: DoneFn) => void): void;
  on(event: 'close', fn: (removed: boolean, done: () => void) => void): void;
  send: SendFn;
  status(s: NodeStatus | Record<string, never>): void;
  log(msg: string): void;
  warn(msg: string): void;
  error(msg: string | Error, m?: NodeMessage): void;
  debug(msg: string): void;
}

export interface NodeDef {
  id: string;
  type: string;
  name?: string;
  [key: string]: unknown;
}

export interface NodeAPI {
  nodes: {
    createNode(node: object, def: NodeDef): void;
    registerType<N extends Node, D extends NodeDef>(type: string, ctor: (this: N, def: D) => void, opts?: { credentials?: Record<string, { type: string }> }): void;
    getNode(id: string): unknown;
  };
  settings: { userDir?: string; [key: string]: unknown };
  _(key: string, substitutions?: Record<string, unknown>): string;
  util: { cloneMessage<T>(msg: T): T };
  comms: { publish(topic: string, data: unknown, retain?: boolean): void };
  /** the editor's admin HTTP API (absent in some test doubles) */
  httpAdmin?: { get(path: string, ...handlers: ((req: any, res: any, next: () => void) => void)[]): void }; // eslint-disable-line @typescript-eslint/no-explicit-any
  auth?: { needsPermission(permission: string): (req: unknown, res: unknown, next: () => void) => void };
}

/** Run an async input handler so that a rejection reaches done(err), never the runtime. */
export function guarded(node: Node, fn: (msg: NodeMessage, send: SendFn, done: DoneFn) => Promise<void>): (msg: NodeMessage, send: SendFn, done: DoneFn) => void {
  return (msg, send, done) => {
    fn(msg, send, done).catch((err: Error) => done(err));
  };
}

/** Close an endpoint that may still be opening, then call a close handler's done (whatever happened). */
export function closeThen(opening: Promise<{ close(): Promise<void> }> | undefined, done: () => void): void {
  if (!opening) return done();
  opening.then((ep) => ep.close()).then(
    () => done(),
    () => done(),
  );
}

/** Status texts sit under the node: keep them short (the full text is in the log and in done(err)). */
export function shortText(text: string, max = 32): string {
  return text.length <= max ? text : text.slice(0, max - 1) + '…';
}
