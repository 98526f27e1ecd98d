// Interop of our group client and group servers with libcoap's command-line tools (coap-server-notls,
// coap-client-notls; Debian libcoap3-bin), over real IPv4 and IPv6 multicast (groupcomm-bis §3.1, §3.9 /
// RFC 10020; RFC 7252 §8). Every party has its own address in a private network namespace lab (see
// test/support/netns.ts), because libcoap cannot be pinned to loopback. Needs root and iproute2; without them the
// suite fails, or is skipped when COAP_INTEROP=skip.

import assert from 'node:assert/strict';
import path from 'node:path';
import { LAB_IFNAME, LabNode, LabProcess, NetnsLab, labUnavailable } from '../support/netns';
import type { ClientEvent, ClientJob } from './node-group-client';
import { lightBody, ServerEvent, ServerJob } from './node-group-server';

const GROUP_V4 = '224.0.1.187';
const GROUP_V6 = 'ff02::fd';
/** The namespaces are private, so every party can use the default CoAP port (a group URI without a port). */
const PORT = 5683;
/** coap-server-notls delays each response to a multicast request by a random time below 5 s (RFC 7252 §8.2). */
const LIBCOAP_LEISURE = 5000;
const COLLECT = LIBCOAP_LEISURE + 1000;
/** How long coap-client-notls listens for responses (-B). */
const CLIENT_WAIT_S = 3;
const SERVERS = ['s1', 's2', 's3'];

type Response = Extract<ClientEvent, { event: 'response' }>;
type End = Extract<ClientEvent, { event: 'end' }>;
type Unicast = Extract<ClientEvent, { event: 'unicast' }>;
type Request = Extract<ServerEvent, { event: 'request' }>;

describe('interop with libcoap over multicast in network namespaces', function () {
  this.timeout(20000);
  let lab: NetnsLab | undefined;
  let client: LabNode;
  let servers: LabNode[];

  before(async function () {
    const missing = labUnavailable(['coap-server-notls', 'coap-client-notls']);
    if (missing) {
      if (process.env.COAP_INTEROP === 'skip') this.skip();
      throw new Error(`libcoap interop tests cannot run: ${missing}. Set COAP_INTEROP=skip to skip them.`);
    }
    lab = await NetnsLab.create([{ name: 'c', host: 2 }, ...SERVERS.map((name, i) => ({ name, host: 11 + i }))]);
    client = lab.node('c');
    servers = SERVERS.map((s) => lab!.node(s));
  });

  after(async function () {
    await lab?.destroy();
  });

  // On failure, show what every process that took part said (servers started in `before` included).
  let involved: (p: LabProcess) => boolean = () => false;
  beforeEach(function () {
    const running = new Set(lab?.started.filter((p) => !p.exit));
    const known = new Set(lab?.started);
    involved = (p) => running.has(p) || !known.has(p);
  });
  afterEach(function () {
    if (this.currentTest?.state === 'failed' && lab) for (const p of lab.started.filter(involved)) console.error(p.transcript());
  });

  const serverAt = (address: string): LabNode => {
    const s = servers.find((n) => n.ipv4 === address || n.ipv6Scoped === address);
    assert.ok(s, `a response came from ${address}, which is not one of the servers`);
    return s;
  };

  /**
   * coap-server-notls on every server node, joined to `group`, allowing resources to be created by PUT (-d).
   * No -A: a socket bound to the unicast address would not receive datagrams sent to the group.
   */
  async function startLibcoapServers(group: string, extraArgs: string[] = []): Promise<LabProcess[]> {
    const procs = servers.map((s) => lab!.spawn(s.name, `coap-server-notls@${s.name}`, 'coap-server-notls', ['-g', group, ...extraArgs, '-p', String(PORT), '-d', '4', '-v', '7']));
    await Promise.all(servers.map((s) => lab!.waitForGroup(s.name, group, 3000)));
    for (const p of procs) assert.equal(p.exit, undefined, `${p.label} exited at start\n${p.transcript()}`);
    return procs;
  }

  /** Our GroupClient in the client namespace; resolves with its reports once it has exited. */
  async function runGroupClient(job: ClientJob, ms: number): Promise<ClientEvent[]> {
    const p = lab!.spawn('c', 'node-group-client@c', process.execPath, [path.join(__dirname, 'node-group-client.js'), JSON.stringify(job)]);
    const exit = await p.exited(ms);
    const events = p.events<ClientEvent>();
    if (exit.code !== 0 || events.some((e) => e.event === 'error')) throw new Error(`our group client failed (${exit.code ?? exit.signal})\n${p.transcript()}`);
    return events;
  }

  /** One of our GroupServers per server node, serving /light; resolves once all are ready. */
  async function startGroupServers(job: (s: LabNode) => ServerJob): Promise<{ proc: LabProcess; job: ServerJob }[]> {
    const started = servers.map((s) => {
      const j = job(s);
      return { proc: lab!.spawn(s.name, `node-group-server@${s.name}`, process.execPath, [path.join(__dirname, 'node-group-server.js'), JSON.stringify(j)]), job: j };
    });
    await Promise.all(started.map(({ proc }) => proc.waitFor((x) => x.events<ServerEvent>().some((e) => e.event === 'ready'), 5000, 'ready report')));
    return started;
  }

  /** coap-client-notls sends one NON GET to a group URI and prints every response body (-w: one per line). */
  async function runLibcoapClient(uri: string): Promise<{ code: number | null; bodies: string[]; proc: LabProcess }> {
    const proc = lab!.spawn('c', 'coap-client-notls@c', 'coap-client-notls', ['-N', '-m', 'get', '-B', String(CLIENT_WAIT_S), '-w', uri]);
    const exit = await proc.exited(CLIENT_WAIT_S * 1000 + 4000);
    return { code: exit.code, bodies: proc.stdout.split('\n').filter((l) => l.length > 0), proc };
  }

  /** The checks shared by the IPv4 and IPv6 runs of our client against libcoap servers. */
  function checkGroupResponses(events: ClientEvent[], addressOf: (s: LabNode) => string, originUriOf: (s: LabNode) => string): void {
    const setup = events.filter((e): e is Unicast => e.event === 'unicast');
    assert.deepEqual(setup.map((e) => `${e.type} ${e.code}`), servers.map(() => 'ACK 2.01'), 'each coap-server-notls created /name from our unicast CON PUT (piggybacked)');
    const responses = events.filter((e): e is Response => e.event === 'response');
    assert.equal(responses.length, servers.length, 'one response per coap-server-notls');
    assert.deepEqual(responses.map((r) => r.origin.address).sort(), servers.map(addressOf).sort(), 'N distinct origins: the servers\' own addresses');
    for (const r of responses) {
      const s = serverAt(r.origin.address);
      assert.equal(r.code, '2.05');
      assert.equal(r.type, 'NON', 'a response to a NON multicast request is NON');
      assert.equal(r.origin.port, PORT);
      assert.equal(r.origin.uri, originUriOf(s));
      assert.equal(r.payload, `libcoap ${s.name}`, `the body from ${r.origin.address} is the one we PUT to that server`);
    }
    const end = events[events.length - 1] as End;
    assert.equal(end.event, 'end', 'the exchange completes after the responses');
    assert.equal(end.responses, servers.length);
    assert.deepEqual(end.responders.map((o) => o.address).sort(), servers.map(addressOf).sort());
    assert.deepEqual(end.errors, []);
    assert.equal(end.cancelled, false);
    assert.ok(end.atMs >= COLLECT - 50, `completed at the deadline (${end.atMs} ms), not at the first response`);
  }

  describe('coap-server-notls group members answer our GroupClient (IPv4)', function () {
    let libcoap: LabProcess[] = [];

    before(async function () {
      libcoap = await startLibcoapServers(GROUP_V4);
    });
    after(async function () {
      await Promise.all(libcoap.map((p) => p.stop()));
    });

    it(`each of ${SERVERS.length} servers answers one NON GET to coap://${GROUP_V4}/name; N distinct origins, then completion`, async function () {
      const events = await runGroupClient({
        bindAddress: client.ipv4,
        multicastInterface: client.ipv4,
        setup: servers.map((s) => ({ method: 'PUT', uri: `coap://${s.ipv4}/name`, payload: `libcoap ${s.name}` })),
        group: { uri: `coap://${GROUP_V4}/name`, timeout: COLLECT },
      }, COLLECT + 8000);
      checkGroupResponses(events, (s) => s.ipv4, (s) => `coap://${s.ipv4}`);
    });

    it('servers suppress 4.04 to a group request (groupcomm-bis §3.1.2): no response, and the exchange still completes', async function () {
      const events = await runGroupClient({
        bindAddress: client.ipv4,
        multicastInterface: client.ipv4,
        group: { uri: `coap://${GROUP_V4}/nothing-here`, timeout: COLLECT },
      }, COLLECT + 5000);
      assert.deepEqual(events.filter((e) => e.event === 'response'), []);
      const end = events[events.length - 1] as End;
      assert.equal(end.event, 'end');
      assert.equal(end.responses, 0);
      for (const p of libcoap) assert.match(p.stdout + p.stderr, /Uri-Path:nothing-here/, `${p.label} received the group request`);
    });
  });

  describe('coap-client-notls gets answers from our GroupServers (IPv4)', function () {
    let ours: { proc: LabProcess; job: ServerJob }[] = [];

    before(async function () {
      ours = await startGroupServers((s) => ({
        name: `node-${s.name}`, address: s.ipv4, port: PORT, leisure: 500,
        groups: [{ address: GROUP_V4, port: PORT, interfaces: [s.ipv4] }], multicastInterface: s.ipv4,
      }));
    });
    after(async function () {
      await Promise.all(ours.map(({ proc }) => proc.stop()));
    });

    it(`coap-client-notls -N -m get -B ${CLIENT_WAIT_S} coap://${GROUP_V4}/light prints the body of every server`, async function () {
      const { code, bodies } = await runLibcoapClient(`coap://${GROUP_V4}/light`);
      assert.equal(code, 0);
      assert.deepEqual(bodies.sort(), ours.map(({ job }) => lightBody(job)).sort());
      for (const { proc, job } of ours) {
        const requests = proc.events<ServerEvent>().filter((e): e is Request => e.event === 'request');
        assert.equal(requests.length, 1, `${job.name} handled the request once`);
        assert.deepEqual({ ...requests[0], remote: requests[0].remote.address }, {
          event: 'request', path: '/light', multicast: true, group: GROUP_V4, type: 'NON', remote: client.ipv4,
        });
      }
    });
  });

  describe(`IPv6: link-local group ${GROUP_V6} with a zone id`, function () {
    describe('coap-server-notls members answer our GroupClient', function () {
      let libcoap: LabProcess[] = [];

      before(async function () {
        libcoap = await startLibcoapServers(GROUP_V6, ['-G', LAB_IFNAME]);
      });
      after(async function () {
        await Promise.all(libcoap.map((p) => p.stop()));
      });

      it(`each server answers one NON GET to coap://[${GROUP_V6}%${LAB_IFNAME}]/name from its own link-local address`, async function () {
        const events = await runGroupClient({
          bindAddress: '::',
          multicastInterface: `::%${client.ifname}`,
          setup: servers.map((s) => ({ method: 'PUT', uri: `coap://[${s.ipv6Scoped}]/name`, payload: `libcoap ${s.name}` })),
          group: { uri: `coap://[${GROUP_V6}%${client.ifname}]/name`, timeout: COLLECT },
        }, COLLECT + 8000);
        checkGroupResponses(events, (s) => s.ipv6Scoped, (s) => `coap://[${s.ipv6}%25${s.ifname}]`);
      });
    });

    describe('coap-client-notls gets answers from our GroupServers', function () {
      let ours: { proc: LabProcess; job: ServerJob }[] = [];

      before(async function () {
        ours = await startGroupServers((s) => ({
          name: `node-${s.name}`, address: s.ipv6Scoped, port: PORT, leisure: 500,
          groups: [{ address: GROUP_V6, port: PORT, interfaces: [`::%${s.ifname}`] }], multicastInterface: `::%${s.ifname}`,
        }));
      });
      after(async function () {
        await Promise.all(ours.map(({ proc }) => proc.stop()));
      });

      it(`coap-client-notls -N -m get -B ${CLIENT_WAIT_S} coap://[${GROUP_V6}%${LAB_IFNAME}]/light prints the body of every server`, async function () {
        const { code, bodies } = await runLibcoapClient(`coap://[${GROUP_V6}%${client.ifname}]/light`);
        assert.equal(code, 0);
        assert.deepEqual(bodies.sort(), ours.map(({ job }) => lightBody(job)).sort());
        for (const { proc, job } of ours) {
          const requests = proc.events<ServerEvent>().filter((e): e is Request => e.event === 'request');
          assert.equal(requests.length, 1, `${job.name} handled the request once`);
          assert.equal(requests[0].multicast, true);
          assert.equal(requests[0].group, GROUP_V6);
          assert.equal(requests[0].remote.address, client.ipv6Scoped);
        }
      });
    });
  });
});
