// coap-group-view: the editor plugin of the live group view. The editor side (coap-group-view.html) adds a
// sidebar tab that draws what the nodes publish through nodes/lib/group-view.ts; the runtime side only registers
// the plugin, so Node-RED lists it.

import type { NodeAPI } from './lib/red';

module.exports = function (RED: NodeAPI & { plugins: { registerPlugin(id: string, def: object): void } }) {
  RED.plugins.registerPlugin('coap-group-view', { type: 'coap-group-view' });
};
