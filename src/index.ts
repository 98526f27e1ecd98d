// Public API of the protocol core (no Node-RED needed): CoAP model and codec, UDP transport, message layer, group
// client and server, group proxy, multicast notifications, OSCORE. See README "Using the core without Node-RED".

export * from './coap/codes';
export * from './coap/codec';
export * from './coap/message';
export * from './coap/options';
export * from './coap/uri';
export * from './coap/block';
export * from './coap/payload';
export * from './coap/content-formats';
export * from './transport/udp-transport';
export * from './messaging/parameters';
export * from './messaging/endpoint';
export * from './group/group-client';
export * from './group/group-server';
export * from './cbor/cri';
export * from './cbor/informative-response';
export * from './proxy/group-proxy';
export * from './proxy/proxy-client';
export * from './proxy/chain';
export * from './proxy/target';
export * from './proxy/admission';
export * from './observe/group-observation';
export * from './observe/multicast-observer';
export * from './observe/notification-relay';
export * as oscore from './oscore';
export * from './observe/ticket-request';
export * from './observe/ticket-listener';
