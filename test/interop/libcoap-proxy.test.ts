// Interop of our forward group proxy (groupcomm-proxy-07 §5.2.1, §5.4.1, §5.4.2; RFC 7252 §5.7.2) with libcoap:
// coap-client-notls sends a unicast request with Proxy-Uri (-P) and Multicast-Timeout (-O 2,<T'>) to our
// GroupProxy, which forwards it to a group of coap-server-notls members and relays each response as a separate
// response carrying Reply-From (option 248). A tshark capture in the proxy's namespace checks every relayed
// message on the wire. Lab as in libcoap-group.test.ts (test/support/netns.ts); needs root, iproute2, libcoap and
// tshark; without them the suite fails, or is skipped when COAP_INTEROP=skip.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decodeReplyFrom } from '../../src/cbor/cri';
import { decode } from '../../src/coap/codec';
import { CODES, codeToString } from '../../src/coap/codes';
import { CoapMessage, getOption, getOptions } from '../../src/coap/message';
import { OPT, decodeUint } from '../../src/coap/options';
import { LAB_IFNAME, LabNode, LabProcess, NetnsLab, labUnavailable } from '../support/netns';
import type { ProxyJob, ProxyReport } from './node-group-proxy';

const GROUP = '224.0.1.187';
const PORT = 5683;
const MULTICAST_TIMEOUT = 2; // [SUGGESTED 2]
const REPLY_FROM = 248; // [SUGGESTED 248]
/** T' in seconds: coap-server-notls delays each multicast response by a random time below 5 s (RFC 7252 §8.2). */
const T_PRIME = 6;
/**
 * `-O num,text` sends the text's bytes; with a 0x prefix, the bytes written in hex. A uint option needs its
 * big-endian bytes: `-O 2,6` would send "6" = 0x36, i.e. 54 s.
 */
const MT_ARG = `${MULTICAST_TIMEOUT},0x${T_PRIME.toString(16).padStart(2, '0')}`;
const SERVERS = ['s1', 's2', 's3'];

type ProxyEventReport = Extract<ProxyReport, { event: 'proxy' }>;

/** One CoAP datagram of a capture: addresses as tshark dissected them, the message as our codec decodes it. */
interface Frame {
  frame: number;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  msg: CoapMessage;
  /** tshark's own view: option labels ("#2: Unknown Option (248)") and the values of the options it does not know */
  tsharkCode: number;
  tsharkOptions: string[];
  tsharkUnknown: string[];
}

const FIELDS = ['frame.number', 'ip.src', 'udp.srcport', 'ip.dst', 'udp.dstport', 'udp.payload', 'coap.code', 'coap.opt.name', 'coap.opt.unknown'];

/** The value tshark shows for an option it has no name for (it lists them as "Unknown Option (N)"), in hex. */
function tsharkUnknownOption(f: Frame, num: number): string | undefined {
  const unknown = f.tsharkOptions.map((n) => /Unknown Option \((\d+)\)/.exec(n)).filter((m): m is RegExpExecArray => m !== null).map((m) => Number(m[1]));
  if (unknown.length !== f.tsharkUnknown.length) return undefined;
  const i = unknown.indexOf(num);
  return i < 0 ? undefined : f.tsharkUnknown[i];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe('interop: coap-client-notls through our GroupProxy to coap-server-notls group members', function () {
  this.timeout(30000);
  let lab: NetnsLab | undefined;
  let client: LabNode;
  let stranger: LabNode;
  let proxyNode: LabNode;
  let servers: LabNode[];
  let proxy: LabProcess;
  let upstreamPort: number;
  let tmp: string | undefined;
  /** server address -> what its /name holds (created by PUT, so that every body names its server) */
  const bodies = new Map<string, string>();

  before(async function () {
    const missing = labUnavailable(['coap-server-notls', 'coap-client-notls', 'tshark']);
    if (missing) {
      if (process.env.COAP_INTEROP === 'skip') this.skip();
      throw new Error(`libcoap proxy interop tests cannot run: ${missing}. Set COAP_INTEROP=skip to skip them.`);
    }
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coap-proxy-interop-'));
    lab = await NetnsLab.create([{ name: 'c', host: 2 }, { name: 'p', host: 3 }, { name: 'x', host: 4 }, ...SERVERS.map((name, i) => ({ name, host: 11 + i }))], `cpx-${process.pid}`);
    client = lab.node('c');
    proxyNode = lab.node('p');
    stranger = lab.node('x');
    servers = SERVERS.map((s) => lab!.node(s));

    // No -A: a socket bound to the unicast address would not receive the group request.
    const libcoap = servers.map((s) => lab!.spawn(s.name, `coap-server-notls@${s.name}`, 'coap-server-notls', ['-g', GROUP, '-p', String(PORT), '-d', '4', '-v', '7']));
    await Promise.all(servers.map((s) => lab!.waitForGroup(s.name, GROUP, 3000)));
    for (const p of libcoap) assert.equal(p.exit, undefined, `${p.label} exited at start\n${p.transcript()}`);
    for (const s of servers) await putName(s, `libcoap ${s.name}`);

    const job: ProxyJob = {
      listen: { address: proxyNode.ipv4, port: PORT }, upstreamAddress: proxyNode.ipv4, multicastInterface: proxyNode.ipv4,
      allow: [{ address: client.ipv4, targets: [`coap://${GROUP}/`] }],
    };
    proxy = lab.spawn('p', 'node-group-proxy@p', process.execPath, [path.join(__dirname, 'node-group-proxy.js'), JSON.stringify(job)]);
    await proxy.waitFor((x) => x.events<ProxyReport>().some((e) => e.event === 'ready'), 5000, 'ready report');
    const ready = proxy.events<ProxyReport>().find((e): e is Extract<ProxyReport, { event: 'ready' }> => e.event === 'ready')!;
    assert.deepEqual(ready.listen, { address: proxyNode.ipv4, port: PORT });
    upstreamPort = ready.upstream.port;
  });

  after(async function () {
    try {
      await lab?.destroy();
    } finally {
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  // On failure, show what every process that took part said (the servers and the proxy included).
  let involved: (p: LabProcess) => boolean = () => false;
  beforeEach(function () {
    const running = new Set(lab?.started.filter((p) => !p.exit));
    const known = new Set(lab?.started);
    involved = (p) => running.has(p) || !known.has(p);
  });
  afterEach(function () {
    if (this.currentTest?.state === 'failed' && lab) for (const p of lab.started.filter(involved)) console.error(p.transcript());
  });

  /** coap-client-notls PUT (CON, unicast) of /name on one server. */
  async function putName(s: LabNode, body: string): Promise<void> {
    const p = lab!.spawn('c', `coap-client-notls PUT@c`, 'coap-client-notls', ['-m', 'put', '-e', body, `coap://${s.ipv4}/name`]);
    const exit = await p.exited(8000);
    if (exit.code !== 0 || p.stderr.trim()) throw new Error(`PUT coap://${s.ipv4}/name failed\n${p.transcript()}`);
    bodies.set(s.ipv4, body);
  }

  const proxyUri = () => `coap://${proxyNode.ipv4}:${PORT}`;
  const groupUri = `coap://${GROUP}/name`;

  /** The proxy's events from index `mark` on. */
  const proxyEvents = (mark: number): ProxyEventReport[] => proxy.events<ProxyReport>().slice(mark).filter((e): e is ProxyEventReport => e.event === 'proxy');
  const eventCount = () => proxy.events().length;

  /**
   * tshark on the proxy's interface (a capture filter: CoAP's port only); `stop` returns the CoAP datagrams.
   * tshark prints a summary line per packet (-P -l) once the packet is in the file, and a packet still in the
   * kernel's capture buffer when tshark is stopped is lost. So `stop` first sends a marker (an Empty NON, which the
   * proxy ignores, RFC 7252 §4.3) and waits for its line: everything sent before it is then in the file.
   */
  async function startCapture(label: string): Promise<{ stop(): Promise<Frame[]> }> {
    const file = path.join(tmp!, `${label}.pcapng`);
    const cap = lab!.spawn('p', `tshark@p (${label})`, 'tshark', ['-i', LAB_IFNAME, '-f', `udp port ${PORT}`, '-P', '-l', '-w', file], 60);
    // tshark says "Capturing on" before dumpcap has opened the interface; "Capture started." comes after.
    await cap.waitFor((x) => /Capture started/.test(x.stderr), 8000, 'capture start');
    return {
      async stop() {
        const mid = 0xc0de;
        const send = `const s = require('dgram').createSocket('udp4'); s.send(Buffer.from([0x50, 0, ${mid >> 8}, ${mid & 0xff}]), ${PORT}, '${proxyNode.ipv4}', () => s.close());`;
        const marker = lab!.spawn('c', `marker@c (${label})`, process.execPath, ['-e', send], 10);
        await marker.exited(5000);
        await cap.waitFor((x) => x.lines.some((l) => l.includes(`MID:${mid},`) && l.includes('Empty Message')), 5000, 'the end-of-capture marker');
        await cap.stop(3000);
        const read = lab!.spawn('p', `tshark -r@p (${label})`, 'tshark', ['-r', file, '-Y', 'coap', '-T', 'json', ...FIELDS.flatMap((f) => ['-e', f])], 30);
        const exit = await read.exited(15000);
        if (exit.code !== 0) throw new Error(`tshark -r ${file} failed\n${read.transcript()}`);
        const packets = JSON.parse(read.stdout) as { _source: { layers: Record<string, string[]> } }[];
        return packets.map(({ _source: { layers } }) => {
          const f = (k: string) => layers[k] ?? [];
          return {
            frame: Number(f('frame.number')[0]), src: f('ip.src')[0], sport: Number(f('udp.srcport')[0]), dst: f('ip.dst')[0], dport: Number(f('udp.dstport')[0]),
            msg: decode(Buffer.from(f('udp.payload')[0].replace(/:/g, ''), 'hex')),
            tsharkCode: Number(f('coap.code')[0]), tsharkOptions: f('coap.opt.name'), tsharkUnknown: f('coap.opt.unknown').map((h) => h.replace(/:/g, '').toLowerCase()),
          };
        });
      },
    };
  }

  /**
   * The wire check of one proxied exchange (client port `clientPort`):
   * - the client's CON request carries Multicast-Timeout T' and Proxy-Uri;
   * - the proxy sends the group a NON request with its own token and without Multicast-Timeout (§5.2.1 steps 4-5);
   * - every message from the proxy to the client is the empty ACK of one of the client's CONs, or a relayed response
   *   (§5.4.1): on the client's token, the same code and payload as the server response it relays, and option 248
   *   whose value, decoded with our decodeReplyFrom, names the server that sent that response.
   * Returns the relayed responses in order, each with the server it came from.
   */
  function checkWire(frames: Frame[], clientPort: number): { relays: { frame: Frame; server: string }[]; fromClient: Frame[]; toGroup: Frame[]; fromServers: Frame[]; toServers: Frame[] } {
    const fromClient = frames.filter((f) => f.src === client.ipv4 && f.sport === clientPort && f.dst === proxyNode.ipv4 && f.dport === PORT);
    const toClient = frames.filter((f) => f.src === proxyNode.ipv4 && f.sport === PORT && f.dst === client.ipv4 && f.dport === clientPort);
    const toGroup = frames.filter((f) => f.src === proxyNode.ipv4 && f.sport === upstreamPort && f.dst === GROUP && f.dport === PORT);
    const fromServers = frames.filter((f) => servers.some((s) => s.ipv4 === f.src) && f.sport === PORT && f.dst === proxyNode.ipv4 && f.dport === upstreamPort);
    const toServers = frames.filter((f) => servers.some((s) => s.ipv4 === f.dst) && f.sport === upstreamPort && f.src === proxyNode.ipv4);

    // RFC 9175 §2.4: before its first fan-out for an address, the proxy verifies it: a piggybacked 4.01 with Echo,
    // which coap-client-notls answers by repeating the request with that Echo (and a new token).
    const first = fromClient[0];
    assert.ok(first, `the capture holds the request from ${client.ipv4}:${clientPort}`);
    const challenge = toClient[0];
    assert.ok(challenge && challenge.msg.type === 'ACK' && challenge.msg.messageId === first.msg.messageId, 'the proxy answered the first request in its ACK');
    assert.equal(challenge.msg.code, CODES.UNAUTHORIZED, 'the first answer is 4.01 (address not yet verified)');
    const echo = getOption(challenge.msg, OPT.ECHO);
    assert.ok(echo && echo.length > 0 && echo.length <= 40, 'the 4.01 carries an Echo option of 1-40 bytes');
    assert.equal(challenge.msg.payload.length, 0, 'the challenge carries no diagnostic (never more than 3x what the client sent, RFC 9000 §8.1)');
    const req = fromClient.find((f) => f.msg.type === 'CON' && getOption(f.msg, OPT.ECHO)?.equals(echo!));
    assert.ok(req, 'coap-client-notls repeated the request with the Echo value');
    toClient.splice(0, 1);
    assert.equal(req.msg.type, 'CON');
    assert.equal(req.msg.code, CODES.GET);
    assert.equal(decodeUint(getOption(req.msg, MULTICAST_TIMEOUT)!), T_PRIME, 'the request carries Multicast-Timeout = T\'');
    // (read on the first request: tshark lists the Echo option of the repeat differently)
    assert.equal(tsharkUnknownOption(first, MULTICAST_TIMEOUT), T_PRIME.toString(16).padStart(2, '0'), `tshark sees option 2 with value ${T_PRIME}`);
    assert.equal(getOption(req.msg, OPT.PROXY_URI)?.toString(), groupUri, 'coap-client-notls -P puts the group URI in Proxy-Uri');

    const fwd = toGroup[0];
    assert.ok(fwd, 'the proxy sent the request to the group');
    assert.equal(fwd.msg.type, 'NON');
    assert.equal(fwd.msg.code, req.msg.code);
    assert.equal(getOption(fwd.msg, MULTICAST_TIMEOUT), undefined, 'step 4: the proxy removes Multicast-Timeout');
    assert.equal(getOption(fwd.msg, OPT.PROXY_URI), undefined);
    assert.deepEqual(getOptions(fwd.msg, OPT.URI_PATH).map(String), ['name']);
    assert.ok(!fwd.msg.token.equals(req.msg.token), 'step 5: the proxy uses its own token towards the group');
    assert.equal(decodeUint(getOption(fwd.msg, OPT.HOP_LIMIT)!), decodeUint(getOption(req.msg, OPT.HOP_LIMIT)!) - 1, 'RFC 8768: Hop-Limit one less than the client\'s');

    const clientCons = new Set(fromClient.filter((f) => f.msg.type === 'CON' && f !== first).map((f) => f.msg.messageId));
    assert.ok(toClient.length > 0, 'the proxy sent something back');
    assert.equal(toClient[0].msg.type, 'ACK', 'the first message back is the ACK of the request');
    assert.equal(toClient[0].msg.messageId, req.msg.messageId);
    assert.equal(toClient[0].msg.code, CODES.EMPTY, 'an empty ACK: the responses follow as separate responses');

    const answers = fromServers.filter((f) => f.msg.code !== CODES.EMPTY && f.msg.token.equals(fwd.msg.token));
    const used = new Set<Frame>();
    const relays: { frame: Frame; server: string }[] = [];
    for (const out of toClient) {
      if (out.msg.code === CODES.EMPTY) {
        assert.equal(out.msg.type, 'ACK', `frame ${out.frame}: an empty message to the client is an ACK`);
        assert.ok(clientCons.has(out.msg.messageId), `frame ${out.frame}: the ACK matches a CON of the client`);
        continue;
      }
      // The proxy relays each response as it arrives, so the relays follow the servers' responses in order. (Each
    // coap-server-notls answers a NON request with the request's Message ID, so all answers share one MID and
    // tshark flags all but the first as "Retransmission"; they come from distinct servers, so they are not.)
      const src = answers.find((a) => a.frame < out.frame && !used.has(a));
      assert.ok(src, `frame ${out.frame}: a relayed response with no server response before it`);
      used.add(src);
      const at = `frame ${out.frame} (relaying frame ${src.frame} from ${src.src})`;
      assert.ok(out.msg.token.equals(req.msg.token), `${at}: on the client's token`);
      assert.equal(out.msg.type, 'NON', `${at}: relayed as NON`);
      assert.equal(codeToString(out.msg.code), codeToString(src.msg.code), `${at}: same code`);
      assert.equal(out.tsharkCode, out.msg.code);
      assert.ok(out.msg.payload.equals(src.msg.payload), `${at}: same payload`);
      const rf = getOption(out.msg, REPLY_FROM);
      assert.ok(rf, `${at}: carries option 248 (Reply-From)`);
      assert.equal(tsharkUnknownOption(out, REPLY_FROM), rf.toString('hex'), `${at}: tshark dissects option 248 with the same value`);
      // CRI [coap, [h'<IPv4>']]: scheme id -1, authority without port because the server used the default 5683.
      assert.equal(rf.toString('hex'), `82208144${Buffer.from(src.src.split('.').map(Number)).toString('hex')}`, `${at}: Reply-From bytes`);
      const { target, reference } = decodeReplyFrom(rf);
      assert.equal(target.scheme, 'coap');
      assert.equal(target.host, src.src, `${at}: Reply-From names the server that sent the response`);
      assert.equal(target.port ?? PORT, src.sport);
      assert.equal(reference, undefined, `${at}: a forward proxy adds no second element (§5.4.1)`);
      relays.push({ frame: out, server: src.src });
    }
    return { relays, fromClient, toGroup, fromServers: answers, toServers };
  }

  it(`coap-client-notls -P coap://<proxy> -O ${MT_ARG} ${groupUri}: an empty ACK, then one relayed response per server, each carrying option 248 naming that server`, async function () {
    const cap = await startCapture('get');
    const mark = eventCount();
    const cli = lab!.spawn('c', 'coap-client-notls@c', 'coap-client-notls', ['-m', 'get', '-P', proxyUri(), '-O', MT_ARG, '-B', String(T_PRIME + 4), '-w', groupUri]);
    const exit = await cli.exited((T_PRIME + 6) * 1000);
    assert.equal(exit.code, 0, cli.transcript());
    await proxy.waitFor(() => proxyEvents(mark).some((e) => e.kind === 'end'), T_PRIME * 1000 + 3000, 'end of the proxied exchange');
    const frames = await cap.stop();

    const events = proxyEvents(mark);
    const request = events.find((e) => e.kind === 'request')!;
    assert.deepEqual({ client: request.client.address, target: request.target, multicastTimeout: request.multicastTimeout }, { client: client.ipv4, target: groupUri, multicastTimeout: T_PRIME });
    const responses = events.filter((e) => e.kind === 'response');
    assert.deepEqual(responses.map((e) => e.origin!.address).sort(), servers.map((s) => s.ipv4).sort(), 'the proxy relayed one response per coap-server-notls, each with its own origin');
    for (const r of responses) {
      assert.deepEqual({ port: r.origin!.port, code: r.code, token: r.token }, { port: PORT, code: '2.05', token: request.token });
      assert.ok(r.at < request.at + T_PRIME * 1000, 'relayed within T\'');
    }
    const end = events.find((e) => e.kind === 'end')!;
    assert.equal(end.reason, 'Multicast-Timeout expired');
    assert.ok(end.at >= request.at + T_PRIME * 1000 - 50, `the exchange ended at T' (${end.at - request.at} ms)`);

    // libcoap 4.3.1 sees a unicast destination (the proxy): it drops the token at the first response and exits,
    // so it prints the first relayed body only; the later relays reach a closed port.
    const printed = cli.stdout.split('\n').filter((l) => l.length > 0);
    assert.deepEqual(printed, [bodies.get(responses[0].origin!.address)], 'coap-client-notls printed the body of the first relayed response');

    const { relays } = checkWire(frames, request.client.port);
    assert.deepEqual(relays.map((r) => r.server), responses.map((e) => e.origin!.address), 'on the wire: one relay per proxy response event, in order');
    for (const r of relays) assert.equal(r.frame.msg.payload.toString(), bodies.get(r.server));
  });

  it(`Observe (-s): coap-client-notls keeps the token and prints every relayed response; a notification after T' is still relayed with option 248 (§5.4.2)`, async function () {
    const obsSeconds = 9; // the client deregisters 9 s after the first response, i.e. after the notification below
    const cap = await startCapture('observe');
    const mark = eventCount();
    const cli = lab!.spawn('c', 'coap-client-notls -s@c', 'coap-client-notls', ['-m', 'get', '-s', String(obsSeconds), '-P', proxyUri(), '-O', MT_ARG, '-B', String(obsSeconds + 9), '-w', groupUri]);
    await proxy.waitFor(() => proxyEvents(mark).filter((e) => e.kind === 'response').length >= servers.length, T_PRIME * 1000 + 2000, 'a relayed response from every server');
    const request = proxyEvents(mark).find((e) => e.kind === 'request')!;
    assert.equal(request.multicastTimeout, T_PRIME);

    // After T', change s1's resource: coap-server-notls notifies its observer (the proxy), which still relays.
    await sleep(Math.max(0, request.at + T_PRIME * 1000 + 500 - Date.now()));
    const s1 = servers[0];
    await putName(s1, `libcoap ${s1.name} v2`);
    await proxy.waitFor(() => proxyEvents(mark).filter((e) => e.kind === 'response').length > servers.length, 4000, 'the relayed notification');
    const exit = await cli.exited((obsSeconds + 11) * 1000);
    assert.equal(exit.code, 0, cli.transcript());
    // The deregistration carries T' again: the proxy relays the servers' answers to it until that T', then ends.
    await proxy.waitFor(() => proxyEvents(mark).some((e) => e.kind === 'end'), T_PRIME * 1000 + 3000, 'end of the observation');
    const frames = await cap.stop();

    const events = proxyEvents(mark);
    const responses = events.filter((e) => e.kind === 'response');
    assert.equal(responses.length, 2 * servers.length + 1, 'one response per server, the notification, then one answer per server to the deregistration');
    assert.deepEqual(responses.slice(0, servers.length).map((e) => e.origin!.address).sort(), servers.map((s) => s.ipv4).sort());
    const notification = responses[servers.length];
    assert.equal(notification.origin!.address, s1.ipv4);
    assert.ok(notification.at > request.at + T_PRIME * 1000, `the notification was relayed after T' (${notification.at - request.at} ms)`);
    assert.equal(events.find((e) => e.kind === 'end')!.reason, 'observe deregistration', 'the client ended the observation through the proxy');

    const printed = cli.stdout.split('\n').filter((l) => l.length > 0);
    const relayedBodies = [...responses.slice(0, servers.length).map((e) => `libcoap ${servers.find((s) => s.ipv4 === e.origin!.address)!.name}`), `libcoap ${s1.name} v2`];
    assert.deepEqual(printed.slice(0, relayedBodies.length), relayedBodies, 'with Observe, coap-client-notls printed every relayed response, in order');

    const { relays, fromClient, toGroup, fromServers, toServers } = checkWire(frames, request.client.port);
    assert.deepEqual(relays.map((r) => r.server), responses.map((e) => e.origin!.address));
    assert.deepEqual(relays.slice(0, relayedBodies.length).map((r) => r.frame.msg.payload.toString()), relayedBodies);
    const observeValues = relays.slice(0, relayedBodies.length).map((r) => getOption(r.frame.msg, OPT.OBSERVE));
    assert.ok(observeValues.every((v) => v !== undefined), 'every relayed response is a notification (carries Observe)');
    // coap-server-notls (without -N) sends the change notification as CON: our upstream endpoint acknowledges it.
    const note = fromServers.find((f) => f.msg.payload.toString() === `libcoap ${s1.name} v2` && getOption(f.msg, OPT.OBSERVE) !== undefined);
    assert.ok(note, 'the capture holds s1\'s notification');
    assert.equal(note.msg.type, 'CON');
    assert.ok(toServers.some((f) => f.msg.type === 'ACK' && f.msg.code === CODES.EMPTY && f.msg.messageId === note.msg.messageId && f.dst === s1.ipv4), 'the proxy ACKed the CON notification');
    // Deregistration: the client's GET with Observe 1 goes on to the group on the proxy's token; the servers' answers
    // to it are relayed (each with option 248, checked by checkWire) until the deregistration's T'.
    const dereg = fromClient.find((f) => f.msg.code === CODES.GET && getOption(f.msg, OPT.OBSERVE) !== undefined && decodeUint(getOption(f.msg, OPT.OBSERVE)!) === 1);
    assert.ok(dereg, 'coap-client-notls deregistered through the proxy');
    const fwdDereg = toGroup.find((f) => getOption(f.msg, OPT.OBSERVE) !== undefined && decodeUint(getOption(f.msg, OPT.OBSERVE)!) === 1);
    assert.ok(fwdDereg && fwdDereg.msg.token.equals(toGroup[0].msg.token), 'the proxy forwarded the deregistration to the group on its own token');
    assert.ok(relays.slice(0, relayedBodies.length).every((r) => r.frame.frame < dereg.frame), 'the observation\'s relays all came before the deregistration');
    const afterDereg = relays.slice(relayedBodies.length);
    assert.equal(afterDereg.length, servers.length);
    assert.ok(afterDereg.every((r) => r.frame.frame > dereg.frame && getOption(r.frame.msg, OPT.OBSERVE) === undefined), 'then one answer per server to the deregistration, without Observe');
    assert.deepEqual(afterDereg.map((r) => r.server).sort(), servers.map((s) => s.ipv4).sort());
  });

  it('without -O 2: a piggybacked 4.00 with an empty Multicast-Timeout and a diagnostic payload (§5.2.1 step 3); nothing goes to the group', async function () {
    const mark = eventCount();
    const cli = lab!.spawn('c', 'coap-client-notls@c', 'coap-client-notls', ['-m', 'get', '-P', proxyUri(), '-B', '3', '-v', '7', groupUri]);
    await cli.exited(6000);
    assert.match(cli.stderr, /^4\.00 Please use Multicast-Timeout$/m, 'coap-client-notls reports the 4.00 and its diagnostic');
    assert.match(cli.stdout, /t:ACK c:4\.00 i:\w+ \{\w+\} \[ 2: \]/, 'libcoap decoded option 2 with an empty value in the piggybacked ACK');
    await proxy.waitFor(() => proxyEvents(mark).some((e) => e.kind === 'reject'), 2000, 'reject event');
    const events = proxyEvents(mark);
    assert.deepEqual(events.map((e) => `${e.kind} ${e.code}`), ['reject 4.00']);
  });

  it('a client that is not on the allow-list gets 4.01 (§5.2.1 step 2); nothing goes to the group', async function () {
    const mark = eventCount();
    const cli = lab!.spawn('x', 'coap-client-notls@x', 'coap-client-notls', ['-m', 'get', '-P', proxyUri(), '-O', MT_ARG, '-B', '3', groupUri]);
    await cli.exited(6000);
    assert.match(cli.stderr, /^4\.01 /m, 'coap-client-notls reports 4.01');
    await proxy.waitFor(() => proxyEvents(mark).some((e) => e.kind === 'reject'), 2000, 'reject event');
    const events = proxyEvents(mark);
    assert.deepEqual(events.map((e) => `${e.kind} ${e.code} ${e.client.address}`), [`reject 4.01 ${stranger.ipv4}`]);
  });
});
