// Helpers for tests that run nodes in node-red-node-test-helper.

export type Msg = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Collect the messages a helper node receives until `done(messages)` says enough. */
export function collect(node: { on(event: 'input', fn: (msg: Msg) => void): void }, done: (msgs: Msg[]) => boolean): Promise<Msg[]> {
  return new Promise((resolve) => {
    const got: Msg[] = [];
    node.on('input', (msg: Msg) => {
      got.push(msg);
      if (done(got)) resolve(got);
    });
  });
}
