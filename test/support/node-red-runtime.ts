// Which Node-RED runtime the node-level tests load: the package's own devDependency (Node-RED 4.1), or the one
// installed under the folder named by COAP_NODE_RED_DIR (how `npm test` runs them again under Node-RED 5 on Node 22).

export function nodeRedRuntime(): string {
  const dir = process.env.COAP_NODE_RED_DIR;
  return dir ? require.resolve('node-red', { paths: [dir] }) : require.resolve('node-red');
}
