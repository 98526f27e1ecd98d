// A simulated lighting group: N lamps, each a GroupServer on its own loopback address (127.0.0.2, .3, ...) and a
// member of one multicast group. Used by the demo (`npm start`) and by the tests. GET /light returns the lamp's
// state as JSON and is observable; PUT/POST /light with "on"/"off" (or {"on": true}) changes it and notifies.

import { CODES } from '../src/coap/codes';
import { GroupServer, GroupServerOptions } from '../src/group/group-server';

export interface Lamp {
  server: GroupServer;
  name: string;
  address: string;
  state: { on: boolean; brightness: number };
}

export interface LightingGroupOptions extends Partial<GroupServerOptions> {
  group?: string;
  groupPort: number;
  /** last byte of the first lamp's address (default 2 -> 127.0.0.2) */
  firstHost?: number;
}

function parseState(body: Buffer): boolean | undefined {
  const text = body.toString('utf8').trim().toLowerCase();
  if (['on', '1', 'true'].includes(text)) return true;
  if (['off', '0', 'false'].includes(text)) return false;
  try {
    const v = JSON.parse(text);
    if (typeof v?.on === 'boolean') return v.on;
  } catch {
    /* not JSON */
  }
  return undefined;
}

export async function startLightingGroup(n: number, opts: LightingGroupOptions): Promise<Lamp[]> {
  const lamps: Lamp[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const address = `127.0.0.${(opts.firstHost ?? 2) + i}`;
      const server = await GroupServer.open({ leisure: 50, port: 0, ...opts, address, groups: [{ address: opts.group ?? '224.0.1.187', port: opts.groupPort }] });
      const lamp: Lamp = { server, name: `lamp-${i + 1}`, address, state: { on: false, brightness: 0 } };
      server.addResource(
        '/light',
        (req) => {
          const code = req.message.code;
          if (code === CODES.PUT || code === CODES.POST) {
            const on = parseState(req.message.payload);
            if (on === undefined) return { code: CODES.BAD_REQUEST, payload: 'expected on/off' };
            const changed = lamp.state.on !== on;
            lamp.state.on = on;
            lamp.state.brightness = on ? 100 : 0;
            if (changed) setImmediate(() => server.notify('/light'));
            return { code: CODES.CHANGED };
          }
          if (code !== CODES.GET) return { code: CODES.METHOD_NOT_ALLOWED };
          return { code: CODES.CONTENT, contentFormat: 50, payload: JSON.stringify({ name: lamp.name, ...lamp.state }) };
        },
        { attributes: { rt: 'light', obs: true }, observable: true },
      );
      lamps.push(lamp);
    }
  } catch (err) {
    await Promise.all(lamps.map((l) => l.server.close()));
    throw err;
  }
  return lamps;
}
