// RFC 9651 Structured Field Values, only what the HTTP headers of groupcomm-proxy-07 §9.2-§9.3 need: a List whose
// members are Byte Sequences (§3.1, §3.3.5), parsed strictly per §4.2 (any other member type, parameters that do
// not parse, or stray characters make the whole field unparseable, so that the caller ignores it) and serialized
// per §4.1. Written by hand: the full RFC 9651 grammar would be a dependency for two headers.

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** RFC 9651 §4.2: the members of a List of Byte Sequences, or undefined when the field does not parse as one. */
export function parseByteSequenceList(field: string | string[] | undefined): Buffer[] | undefined {
  if (field === undefined) return undefined;
  // §4.2: several field lines are combined with a comma before parsing.
  const input = (Array.isArray(field) ? field.join(',') : field).replace(/^[ \t]+|[ \t]+$/g, '');
  if (input === '') return [];
  const out: Buffer[] = [];
  let i = 0;
  const sp = () => {
    while (i < input.length && (input[i] === ' ' || input[i] === '\t')) i++;
  };
  while (i < input.length) {
    // §4.2.7: a Byte Sequence is ":" base64 ":".
    if (input[i] !== ':') return undefined;
    const end = input.indexOf(':', i + 1);
    if (end < 0) return undefined;
    const b64 = input.slice(i + 1, end);
    if (!B64.test(b64) || b64.length % 4 === 1) return undefined;
    out.push(Buffer.from(b64, 'base64'));
    i = end + 1;
    // §4.2.3.2: parameters are allowed on any item; skip them, but they must parse.
    while (input[i] === ';') {
      i++;
      sp();
      const key = /^[a-z*][a-z0-9_\-.*]*/.exec(input.slice(i));
      if (!key) return undefined;
      i += key[0].length;
      if (input[i] === '=') {
        i++;
        const bare = /^(\?[01]|-?\d+(\.\d+)?|"(?:[^"\\]|\\["\\])*"|[A-Za-z*][\w:/!#$%&'*+\-.^`|~]*|:[A-Za-z0-9+/=]*:)/.exec(input.slice(i));
        if (!bare) return undefined;
        i += bare[0].length;
      }
    }
    sp();
    if (i >= input.length) break;
    if (input[i] !== ',') return undefined;
    i++;
    sp();
    if (i >= input.length) return undefined; // §4.2.1: a trailing comma fails parsing
  }
  return out;
}

/** RFC 9651 §4.1.1 and §4.1.8: a List of Byte Sequences, standard base64 with padding. */
export function serializeByteSequenceList(items: Buffer[]): string {
  return items.map((b) => `:${b.toString('base64')}:`).join(', ');
}
