// Content of every kind a Yjs client can put in a document, for the tests of what the server keeps exactly.
//
//   node content.mjs gen SEED N   prints N lines {"kind", "update"}: random content made with the Yjs API
//                                  (map and array values, text embeds and formats, subdocuments, XML), as
//                                  base64 v1 updates
//   node content.mjs read          reads base64 updates (one document a line: its updates, applied in
//                                  order, separated by spaces) and prints, one a line, what a Yjs client
//                                  reads from each: `canon` of the roots m, a, t, x (or "ERR …")
//
// `canon` tells apart what JSON.stringify does not: key order, -0, BigInt, undefined, Uint8Array,
// subdocument options. client.mjs uses `revive` and `readContent` for the same values over the wire.

import { createInterface } from 'node:readline'

// The Yjs these work with is the caller's (`useYjs`): a client flavour's Yjs, never a second copy
// resolved from this directory (instanceof checks need one Yjs, and tests/peers has its own packages).
let Y
export const useYjs = (y) => { Y = y }

export const canon = (x) => {
  if (x === undefined) return 'undefined'
  if (typeof x === 'bigint') return x + 'n'
  if (typeof x === 'number') return Object.is(x, -0) ? '-0' : String(x)
  if (x instanceof Uint8Array) return 'bytes[' + Array.from(x) + ']'
  if (x instanceof Y.Doc) return `doc(${x.guid}, meta=${canon(x.meta)}, autoLoad=${x.autoLoad}, gc=${x.gc}, shouldLoad=${x.shouldLoad})`
  if (x instanceof Y.XmlHook) return `hook(${x.hookName}, ${canon(x.toJSON())})`
  if (x instanceof Y.XmlElement) return `<${x.nodeName} ${canon(x.getAttributes())}>${x.toArray().map(canon).join('')}</>`
  if (x instanceof Y.XmlText) return `text(${canon(x.toDelta())})`
  if (x instanceof Y.AbstractType) return canon(x.toJSON())
  if (Array.isArray(x)) return '[' + x.map(canon).join(',') + ']'
  if (x !== null && typeof x === 'object') {
    return '{' + Object.keys(x).map((k) => JSON.stringify(k) + ':' + canon(x[k])).join(',') + '}'
  }
  return JSON.stringify(x)
}

/** A JSON value with tagged stand-ins for what JSON cannot carry: {"$negzero": 1}, {"$bigint": "5"},
 * {"$bytes": [1, 2]}, {"$undefined": 1}. */
export const revive = (v) => {
  if (Array.isArray(v)) return v.map(revive)
  if (v === null || typeof v !== 'object') return v
  if ('$negzero' in v) return -0
  if ('$bigint' in v) return BigInt(v.$bigint)
  if ('$bytes' in v) return new Uint8Array(v.$bytes)
  if ('$undefined' in v) return undefined
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]))
}

/** What a client reads: every entry of the map `m` (subdocuments included), the array `a`, the delta
 * of the text `t`, the children of the XML fragment `x`. */
export const readContent = (doc) => {
  const m = doc.getMap('m')
  return [
    'm=' + [...m.keys()].sort().map((k) => k + ':' + canon(m.get(k))).join(';'),
    'a=' + canon(doc.getArray('a').toArray()),
    't=' + canon(doc.getText('t').toDelta()),
    'x=' + doc.getXmlFragment('x').toArray().map(canon).join('')
  ].join(' | ')
}

// -------------------------------------------------------------------------------- random content
let seed = 1
const random = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
const pick = (xs) => xs[Math.floor(random() * xs.length)]
const STRINGS = ['', 'a', 'b', 'c', 'José', '\ud800', 'x\udfffy', '😀', '\u0000', 'constructor', 'gc', 'meta']
const NUMBERS = [0, -0, 1, -1, 0.5, 0.1, 1.5, 0.1 + 0.2, 2 ** 31, 2 ** 31 - 1, -(2 ** 31), 2 ** 40, 2 ** 53, 2 ** 53 + 2,
  1e21, 1e22, 1e23, 4e-24, 5e-324, 1.7976931348623157e308, 3.4028234663852886e38, 123.456, NaN, Infinity, -Infinity]
const leaf = () => {
  const r = random()
  if (r < 0.4) return pick(NUMBERS)
  if (r < 0.6) return pick(STRINGS)
  if (r < 0.75) return pick([true, false, null, undefined])
  if (r < 0.82) return pick([5n, -(2n ** 63n), 2n ** 62n])
  return new Uint8Array([1, 2, 3])
}
const value = (depth = 0) => {
  const r = random()
  if (depth > 2 || r < 0.5) return leaf()
  if (r < 0.7) return Array.from({ length: Math.floor(random() * 3) }, () => value(depth + 1))
  const o = {}
  for (let i = Math.floor(random() * 3); i > 0; i--) o[pick(STRINGS)] = value(depth + 1)
  return o
}
const jsonValue = (depth = 0) => { // what survives JSON.stringify (embeds and formats travel as JSON text)
  const r = random()
  if (depth > 2 || r < 0.5) return pick([...NUMBERS.filter(Number.isFinite), ...STRINGS, true, false, null])
  if (r < 0.7) return Array.from({ length: Math.floor(random() * 3) }, () => jsonValue(depth + 1))
  const o = {}
  for (let i = Math.floor(random() * 3); i > 0; i--) o[pick(STRINGS)] = jsonValue(depth + 1)
  return o
}
const KINDS = {
  map: (doc) => doc.getMap('m').set('k', value()),
  array: (doc) => doc.getArray('a').push([value(), value()]),
  embed: (doc) => doc.getText('t').insertEmbed(0, { e: jsonValue() }),
  format: (doc) => { const t = doc.getText('t'); t.insert(0, 'ab'); t.format(0, 1, { f: jsonValue() }) },
  insertWithAttributes: (doc) => doc.getText('t').insert(0, 'ab', { bold: pick([true, null, 'x', 1.5]) }),
  subdoc: (doc) => {
    const opts = { guid: 'g' + Math.floor(random() * 1e6) }
    if (random() < 0.5) opts.meta = value()
    if (random() < 0.4) opts.autoLoad = true
    if (random() < 0.4) opts.gc = false
    doc.getMap('m').set('s', new Y.Doc(opts))
  },
  xmlElement: (doc) => {
    const e = new Y.XmlElement(pick(['p', 'div']))
    doc.getXmlFragment('x').insert(0, [e])
    e.setAttribute('a', pick(STRINGS))
    e.insert(0, [new Y.XmlText('hi')])
  },
  xmlHook: (doc) => doc.getXmlFragment('x').insert(0, [new Y.XmlHook(pick(['h', 'img']))]),
  mapOfTypes: (doc) => { const inner = new Y.Map(); doc.getMap('m').set('k', inner); inner.set('v', value()) }
}

const main = async () => {
  useYjs(await import('yjs'))
  const [command, seedArg, countArg] = process.argv.slice(2)
  if (command === 'gen') {
    seed = Number(seedArg)
    for (let i = 0; i < Number(countArg); i++) {
      const doc = new Y.Doc()
      const kind = pick(Object.keys(KINDS))
      try {
        KINDS[kind](doc)
      } catch (e) {
        continue // Yjs itself refuses it (e.g. undefined in an array): no client can send it
      }
      const update = Buffer.from(Y.encodeStateAsUpdate(doc)).toString('base64')
      process.stdout.write(JSON.stringify({ kind, update }) + '\n')
    }
  } else if (command === 'read') {
    const lines = createInterface({ input: process.stdin, crlfDelay: Infinity })
    for await (const line of lines) {
      const doc = new Y.Doc()
      let out
      try {
        for (const part of line.split(' ')) Y.applyUpdate(doc, new Uint8Array(Buffer.from(part, 'base64')))
        out = readContent(doc)
      } catch (e) {
        out = 'ERR ' + e.message
      }
      process.stdout.write(JSON.stringify(out) + '\n')
    }
  } else {
    throw new Error('usage: node content.mjs gen SEED N | node content.mjs read')
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
