// Which Node-RED runtime the node-level tests load: the package's own devDependency (Node-RED 4.1), or the one
// installed under the folder named by COAP_NODE_RED_DIR (how `npm test` runs them again under Node-RED 5 on Node 22).

import path from 'node:path';

export function nodeRedRuntime(): string {
  const dir = process.env.COAP_NODE_RED_DIR;
  return dir ? require.resolve('node-red', { paths: [dir] }) : require.resolve('node-red');
}

/**
 * A core node of that same runtime, e.g. coreNode('common/24-complete.js'): node-red-node-test-helper registers
 * its runtime's own catch / status / complete nodes, and a second copy from another Node-RED fails to register.
 */
export function coreNode(file: string): unknown {
  return require(require.resolve(`@node-red/nodes/core/${file}`, { paths: [path.dirname(nodeRedRuntime())] }));
}
