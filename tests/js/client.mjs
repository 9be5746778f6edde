// Interop test client: one real y-websocket WebsocketProvider in a long-lived Node process, driven by
// tests/jsclient.py over stdin/stdout. Which Yjs and provider it runs is its *flavour*: the module named
// by the first argument (default ./yjs13.mjs: yjs 13.6 + y-websocket 3.x), which exports Y,
// WebsocketProvider, auth (y-protocols/auth), WebSocket (ws) and packages (names for `ping`), resolved in
// the package it lives in (tests/peers: y-websocket 2, the next major with Yjs 14). Yjs 14 has one
// shared type (`doc.get(name)`, map entries as attributes): `shared` below hides the difference.
//
// Protocol (one JSON object per line):
//   stdin  request : {"id": <n>, "cmd": "<name>", ...args}
//   stdout response: {"id": <n>, "ok": true, ...result}  |  {"id": <n>, "ok": false, "error": "..."}
//   stdout event   : {"event": "<name>", "t": <ms since process start>, ...fields}
// stdout carries nothing else: every console.* call is redirected to stderr.
// The full command list is in the COMMANDS table at the bottom and in tests/jsclient.py.

import { createInterface } from 'node:readline'
import { readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { readContent, revive, useYjs } from './content.mjs'

const flavourUrl = process.argv[2] ? pathToFileURL(resolve(process.argv[2])).href : new URL('./yjs13.mjs', import.meta.url).href
const { Y, WebsocketProvider, auth: authProtocol, WebSocket, packages } = await import(flavourUrl)
const yjs14 = typeof Y.Doc.prototype.getText !== 'function'
useYjs(Y)

// ---------------------------------------------------------------- stdout hygiene
for (const level of ['log', 'info', 'debug', 'warn', 'trace']) {
  console[level] = (...args) => console.error(...args)
}

const t0 = Date.now()
const out = (obj) => { process.stdout.write(JSON.stringify(obj) + '\n') }
const emit = (event, fields = {}) => out({ event, t: Date.now() - t0, ...fields })

process.on('uncaughtException', (err) => {
  console.error('uncaughtException', err)
  emit('uncaught', { error: String(err && err.stack ? err.stack : err) })
})
process.on('unhandledRejection', (err) => {
  console.error('unhandledRejection', err)
  emit('uncaught', { error: String(err && err.stack ? err.stack : err) })
})

// ---------------------------------------------------------------- state
/** @type {Y.Doc} */
let doc = new Y.Doc()
/** @type {WebsocketProvider | null} */
let provider = null
let lastStatus = 'none' // 'none' until connect, then what the provider reported last
let closes = [] // every 'connection-close' seen: {code, reason, wasClean, local, permanent, t}
let errors = [] // every 'connection-error': {message, t}
let terminalClose = null // {code, reason, t} from the provider's 'closed' event (4400-4499)
let permissionDenied = [] // reasons from auth messages [2, 0, reason]
let syncedCount = 0 // how many times 'sync' went to true
let syncLog = [] // every sync message received: {sub, size, update (base64, small ones only), t}
// Yjs 14 only: content IDs of local updates that no sync step 2 or update from the server has covered yet
// (what the next y-websocket's sync status waits for); null until the first local update
let unconfirmed = null
const contentIds = typeof Y.createContentIdsFromUpdate === 'function'

const resetRecords = () => {
  closes = []
  errors = []
  terminalClose = null
  permissionDenied = []
  syncedCount = 0
  syncLog = []
  unconfirmed = null
  lastStatus = 'none'
}

const requireProvider = () => {
  if (provider === null) throw new Error('not connected: send "connect" first')
  return provider
}

const b64 = (u8) => Buffer.from(u8).toString('base64')
const unb64 = (s) => new Uint8Array(Buffer.from(s, 'base64'))
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** lib0 varUint at `pos` of `arr`: [value, next position]; throws past the end. */
const readVarUint = (arr, pos) => {
  let num = 0
  let mult = 1
  while (true) {
    if (pos >= arr.length) throw new Error('truncated varUint')
    const b = arr[pos++]
    num += (b & 127) * mult
    mult *= 128
    if (b < 128) return [num, pos]
  }
}

/** Record a received sync message (the decoder stands after its type 0) before the provider handles it. */
const tapSync = (decoder) => {
  try {
    const [sub, pos] = readVarUint(decoder.arr, decoder.pos)
    const [len, start] = readVarUint(decoder.arr, pos)
    const payload = decoder.arr.subarray(start, start + len)
    syncLog.push({ sub, size: len, update: len <= 64 ? b64(payload) : null, t: Date.now() - t0 })
    if ((sub === 1 || sub === 2) && contentIds && unconfirmed !== null) {
      unconfirmed = Y.excludeContentIds(unconfirmed, Y.createContentIdsFromUpdate(payload))
    }
  } catch (e) {
    syncLog.push({ sub: null, error: String(e), t: Date.now() - t0 })
  }
}

// ---------------------------------------------------------------- shared types (Yjs 13 and 14)
const shared = {
  text: (name) => yjs14 ? doc.get(name) : doc.getText(name),
  map: (name) => {
    if (!yjs14) return doc.getMap(name)
    const t = doc.get(name)
    return { get: (k) => t.getAttr(k), set: (k, v) => t.setAttr(k, v), delete: (k) => t.deleteAttr(k), toJSON: () => t.getAttrs() }
  },
  array: (name) => {
    if (yjs14) throw new Error(`${name}: arrays of maps are only driven with Yjs 13`)
    return doc.getArray(name)
  }
}

/** A map value as the test sees it: JSON keeps key order, and -0 is marked (JSON.stringify writes 0). */
const describeValue = (v) => {
  if (v === undefined) return { kind: 'absent' }
  if (v instanceof Y.Doc) return { kind: 'doc', guid: v.guid, meta: v.meta === undefined ? null : v.meta }
  if (Y.XmlHook !== undefined && v instanceof Y.XmlHook) return { kind: 'xmlhook', hookName: v.hookName }
  if (v !== null && typeof v === 'object' && v.doc !== undefined && v._item !== undefined) return { kind: 'type', type: v.constructor.name }
  return { kind: 'json', json: JSON.stringify(v, (_k, x) => Object.is(x, -0) ? { $negativeZero: true } : x) }
}

/** Resolve when check() is truthy, re-checking whenever `subscribe` fires; reject after timeout ms. */
const waitFor = (check, subscribe, timeout, what) => new Promise((resolve, reject) => {
  const first = check()
  if (first) return resolve(first)
  let unsubscribe = () => {}
  const timer = setTimeout(() => {
    unsubscribe()
    reject(new Error(`timeout after ${timeout} ms waiting for ${what}`))
  }, timeout)
  unsubscribe = subscribe(() => {
    const v = check()
    if (v) {
      clearTimeout(timer)
      unsubscribe()
      resolve(v)
    }
  })
})

const pkgVersion = (name) => {
  try {
    return JSON.parse(readFileSync(join(process.cwd(), 'node_modules', name, 'package.json'), 'utf8')).version
  } catch (e) {
    return null
  }
}

const statusSnapshot = () => {
  const p = provider
  return {
    connected: p !== null && p.wsconnected,
    connecting: p !== null && p.wsconnecting,
    synced: p !== null && p.synced,
    status: lastStatus,
    shouldConnect: p !== null && p.shouldConnect,
    url: p !== null ? p.url : null,
    protocol: p !== null && p.ws ? p.ws.protocol : null, // the subprotocol the server answered ('' = none)
    unsuccessfulReconnects: p !== null ? p.wsUnsuccessfulReconnects : 0,
    syncedCount,
    closes,
    lastClose: closes.length ? closes[closes.length - 1] : null,
    terminalClose,
    permanentlyClosed: terminalClose !== null,
    errors,
    permissionDenied
  }
}

const awarenessSnapshot = () => {
  const p = requireProvider()
  const states = {}
  const all = {}
  let count = 0
  for (const [clientId, state] of p.awareness.getStates()) {
    count++
    all[clientId] = state
    if (state && typeof state === 'object' && state.user !== undefined) states[clientId] = state
  }
  return {
    clientId: doc.clientID,
    states, // clientID -> state, only entries that have a `user` field (the local one included)
    users: Object.values(states).map((s) => s.user),
    count: Object.keys(states).length,
    rawCount: count, // every entry, e.g. the server's own `{}` state too
    all
  }
}

// ---------------------------------------------------------------- connect / teardown
const connect = (a) => {
  if (provider !== null) throw new Error('already connected: one provider per process ("destroy" first)')
  if (!a.url || a.room === undefined) throw new Error('connect needs url and room')
  resetRecords()
  textName = a.textName ? String(a.textName) : 'code'
  const params = { ...(a.params || {}) }
  if (a.token !== undefined && a.token !== null) params.token = a.token
  const opts = {
    WebSocketPolyfill: WebSocket,
    params,
    connect: false,
    disableBc: a.disableBc !== undefined ? !!a.disableBc : true
  }
  if (a.maxBackoffTime !== undefined) opts.maxBackoffTime = a.maxBackoffTime
  if (a.protocols !== undefined) opts.protocols = a.protocols // WebSocket subprotocols to offer
  const p = new WebsocketProvider(a.url, String(a.room), doc, opts)
  provider = p

  const handleSync = p.messageHandlers[0]
  p.messageHandlers[0] = (encoder, decoder, ...rest) => {
    if (provider === p) tapSync(decoder)
    return handleSync(encoder, decoder, ...rest)
  }
  doc.on('update', (update, origin) => {
    if (provider !== p || origin === p || !contentIds) return
    const ids = Y.createContentIdsFromUpdate(update)
    unconfirmed = unconfirmed === null ? ids : Y.mergeContentIds([unconfirmed, ids])
  })

  // auth messages ([2, 0, reason] = permission denied): record + event instead of console.warn only
  p.messageHandlers[2] = (_encoder, decoder, prov) => {
    authProtocol.readAuthMessage(decoder, prov.doc, (_ydoc, reason) => {
      permissionDenied.push(reason)
      emit('permission-denied', { reason })
    })
  }
  p.on('status', ({ status }) => {
    if (provider !== p) return
    lastStatus = status
    emit('status', { status })
  })
  p.on('sync', (synced) => {
    if (provider !== p) return
    if (synced) syncedCount++
    emit('synced', { synced })
  })
  p.on('connection-close', (ev) => {
    if (provider !== p) return
    let rec
    if (ev == null) {
      // closed by us: provider.disconnect()/destroy() or the 30 s no-message watchdog
      rec = { code: null, reason: null, wasClean: null, local: true, permanent: false }
    } else {
      rec = {
        code: ev.code,
        reason: ev.reason === undefined || ev.reason === null ? '' : String(ev.reason),
        wasClean: ev.wasClean === undefined ? null : ev.wasClean,
        local: false,
        // the same predicate the provider applies right after this event (y-websocket >= 3.1:
        // 4400-4499 = permanent, it stops reconnecting and emits 'closed'; 2.x and the next major
        // (4.0 prereleases) have none and retry every close)
        permanent: typeof p.shouldReconnect === 'function' ? !p.shouldReconnect(ev, p) : false
      }
    }
    rec.t = Date.now() - t0
    closes.push(rec)
    emit('connection-close', rec)
  })
  p.on('closed', ({ code, reason }) => {
    if (provider !== p) return
    terminalClose = { code, reason: reason === undefined || reason === null ? '' : String(reason), t: Date.now() - t0 }
    emit('closed', terminalClose)
  })
  p.on('connection-error', (ev) => {
    if (provider !== p) return
    const message = ev && (ev.message || (ev.error && String(ev.error)))
    const rec = { message: message || String(ev && ev.type ? ev.type : ev), t: Date.now() - t0 }
    errors.push(rec)
    emit('connection-error', rec)
  })
  if (a.awarenessEvents !== false) {
    p.awareness.on('change', ({ added, updated, removed }, origin) => {
      if (provider !== p) return
      emit('awareness', { added, updated, removed, local: origin === 'local' })
    })
  }

  if (a.name !== undefined || a.color !== undefined) {
    p.awareness.setLocalStateField('user', {
      name: a.name !== undefined ? a.name : 'js-' + doc.clientID,
      color: a.color !== undefined ? a.color : '#30bced'
    })
  }
  if (a.awareness !== undefined) p.awareness.setLocalState(a.awareness)
  if (a.connect !== false) p.connect()
  return { clientId: doc.clientID, url: p.url }
}

/** Destroy provider + doc (graceful: null awareness, close frame). Waits briefly for the socket to close. */
const destroy = async (waitMs = 1000) => {
  const p = provider
  if (p === null) return { destroyed: false }
  const ws = p.ws
  p.destroy()
  provider = null
  doc.destroy()
  doc = new Y.Doc()
  if (ws && ws.readyState !== WebSocket.CLOSED) {
    await Promise.race([new Promise((resolve) => ws.once('close', resolve)), sleep(waitMs)])
  }
  return { destroyed: true }
}

// ---------------------------------------------------------------- commands
let textName = 'code' // the Y.Text the text commands act on; connect's `textName` changes it
const text = () => shared.text(textName)

const COMMANDS = {
  ping: () => ({
    pong: true,
    node: process.version,
    versions: Object.fromEntries(packages.map((name) => [name, pkgVersion(name)]))
  }),
  connect: (a) => connect(a),
  // provider.connect(): resume after disconnect or after a permanent (4400-4499) close
  reconnect: () => { requireProvider().connect(); return {} },
  // provider.disconnect(): graceful, no automatic reconnect; the doc is kept
  disconnect: () => { requireProvider().disconnect(); return {} },
  // drop the TCP connection without a close frame; the provider then reconnects as usual
  terminate: () => {
    const ws = requireProvider().ws
    if (ws) ws.terminate()
    return { terminated: !!ws }
  },
  destroy: () => destroy(),
  exit: async () => {
    await destroy()
    setTimeout(() => process.exit(0), 20)
    return { exiting: true }
  },
  waitSynced: ({ timeout = 10000 }) => {
    const p = requireProvider()
    return waitFor(() => p.synced && { synced: true }, (cb) => {
      p.on('sync', cb)
      return () => p.off('sync', cb)
    }, timeout, 'synced')
  },
  status: () => statusSnapshot(),
  clientId: () => ({ clientId: doc.clientID }),

  insert: ({ index, text: s }) => {
    const t = text()
    const i = index === undefined || index === null || index < 0 ? t.length : index
    if (i > t.length) throw new Error(`index ${i} out of range (length ${t.length})`)
    t.insert(i, String(s))
    return { length: t.length }
  },
  delete: ({ index, length }) => {
    const t = text()
    if (index < 0 || index + length > t.length) throw new Error(`range ${index}+${length} out of range (length ${t.length})`)
    t.delete(index, length)
    return { length: t.length }
  },
  setText: ({ text: s }) => {
    const t = text()
    doc.transact(() => {
      t.delete(0, t.length)
      t.insert(0, String(s))
    })
    return { length: t.length }
  },
  typeChars: async ({ text: s, intervalMs = 0 }) => {
    const chars = Array.from(String(s)) // code points, not UTF-16 units
    for (let k = 0; k < chars.length; k++) {
      if (k > 0 && intervalMs > 0) await sleep(intervalMs)
      const t = text()
      t.insert(t.length, chars[k])
    }
    return { typed: chars.length, length: text().length }
  },
  getText: () => ({ text: text().toString() }),
  waitText: ({ equals, contains, timeout = 10000 }) => {
    if (equals === undefined && contains === undefined) throw new Error('waitText needs equals or contains')
    const check = () => {
      const s = text().toString()
      if (equals !== undefined && s !== equals) return null
      if (contains !== undefined && !s.includes(contains)) return null
      return { text: s }
    }
    return waitFor(check, (cb) => {
      doc.on('update', cb)
      return () => doc.off('update', cb)
    }, timeout, equals !== undefined ? `text == ${JSON.stringify(equals).slice(0, 200)}` : `text containing ${JSON.stringify(contains).slice(0, 200)}`)
      .catch((e) => { throw new Error(`${e.message}; text is ${JSON.stringify(text().toString()).slice(0, 500)}`) })
  },
  getMeta: () => ({ meta: shared.map('meta').toJSON() }),
  setMeta: ({ key, value }) => { shared.map('meta').set(String(key), value); return {} },
  getRuns: () => ({ runs: shared.array('runs').toJSON() }),
  // a value in any root map: kind 'json' (value as given), 'doc' (a subdocument with `value` as its meta),
  // 'xmlhook' (a Y.XmlHook named `value`, Yjs 13 only); answers what the map holds then (as mapGet),
  // before any message from the server could change it
  mapSet: ({ root, key, value, kind = 'json' }) => {
    let v = value
    if (kind === 'doc') v = new Y.Doc({ meta: value })
    else if (kind === 'xmlhook') v = new Y.XmlHook(String(value))
    else if (kind !== 'json') throw new Error('unknown kind ' + kind)
    shared.map(String(root)).set(String(key), v)
    return describeValue(shared.map(String(root)).get(String(key)))
  },
  mapGet: ({ root, key }) => describeValue(shared.map(String(root)).get(String(key))),
  // sync messages received since index `since`: {sub: 0 step 1 | 1 step 2 | 2 update, size, update}
  syncLog: ({ since = 0 }) => ({ messages: syncLog.slice(since), count: syncLog.length }),
  // Yjs 14: have the server's step 2s and updates covered every local update's content IDs?
  confirmation: () => ({
    supported: contentIds,
    confirmed: unconfirmed === null || (unconfirmed.inserts.isEmpty() && unconfirmed.deletes.isEmpty())
  }),
  // Several changes in one transaction (so one update), as a hostile or buggy editor could make them:
  // ["setMeta", key, value] | ["deleteMeta", key] | ["pushRun", {..}] | ["setRun", i, key, value]
  // | ["deleteRun", i] | ["insert", index, text]
  transact: ({ ops }) => {
    doc.transact(() => {
      for (const [op, a, b, c] of ops) {
        if (op === 'setMeta') shared.map('meta').set(String(a), b)
        else if (op === 'deleteMeta') shared.map('meta').delete(String(a))
        else if (op === 'pushRun') shared.array('runs').push([new Y.Map(Object.entries(a))])
        else if (op === 'setRun') shared.array('runs').get(a).set(String(b), c)
        else if (op === 'deleteRun') shared.array('runs').delete(a, 1)
        else if (op === 'insert') text().insert(a, String(b))
        else throw new Error('unknown op ' + op)
      }
    })
    return { meta: shared.map('meta').toJSON(), runs: shared.array('runs').length, text: text().toString() }
  },
  // Content beyond code/meta/runs, in the roots content.mjs reads (m, a, t, x); values may carry the tagged
  // stand-ins of content.mjs `revive` (-0, BigInt, Uint8Array, undefined). One transaction each.
  putContent: ({ op, args = [] }) => {
    const [a, b] = args.map(revive)
    doc.transact(() => {
      if (op === 'mapSet') doc.getMap('m').set(String(a), b)
      else if (op === 'arrayPush') doc.getArray('a').push(a)
      else if (op === 'subdoc') doc.getMap('m').set(String(a), new Y.Doc(b === null ? {} : { meta: b }))
      else if (op === 'xmlHook') doc.getXmlFragment('x').insert(0, [new Y.XmlHook(String(a))])
      else if (op === 'xmlElement') {
        const e = new Y.XmlElement(String(a))
        doc.getXmlFragment('x').insert(0, [e])
        for (const [k, v] of Object.entries(b || {})) e.setAttribute(k, v)
      } else if (op === 'embed') doc.getText('t').insertEmbed(doc.getText('t').length, a)
      else if (op === 'format') doc.getText('t').insert(doc.getText('t').length, 'f', a)
      else throw new Error('unknown content op ' + op)
    })
    return { content: readContent(doc) }
  },
  readContent: () => ({ content: readContent(doc) }),
  stateVector: () => ({ stateVector: b64(Y.encodeStateVector(doc)) }),
  encodeState: () => ({ update: b64(Y.encodeStateAsUpdate(doc)) }),
  applyUpdate: ({ update }) => { Y.applyUpdate(doc, unb64(update), 'test'); return {} },

  setAwareness: ({ state }) => { requireProvider().awareness.setLocalState(state === undefined ? null : state); return {} },
  setAwarenessField: ({ field, value }) => { requireProvider().awareness.setLocalStateField(String(field), value); return {} },
  awarenessStates: () => awarenessSnapshot()
}

// ---------------------------------------------------------------- request loop
let inFlight = 0
const handle = async (line) => {
  if (!line.trim()) return
  let req
  try {
    req = JSON.parse(line)
  } catch (e) {
    out({ id: null, ok: false, error: 'bad JSON: ' + e.message })
    return
  }
  const id = req.id === undefined ? null : req.id
  const fn = COMMANDS[req.cmd]
  if (!fn) {
    out({ id, ok: false, error: `unknown cmd ${JSON.stringify(req.cmd)}; known: ${Object.keys(COMMANDS).join(', ')}` })
    return
  }
  inFlight++
  try {
    const result = await fn(req)
    out({ ...(result || {}), id, ok: true })
  } catch (e) {
    out({ id, ok: false, error: String(e && e.message ? e.message : e) })
  } finally {
    inFlight--
  }
}

// Commands run concurrently (each line is dispatched as soon as it arrives); a driver that needs
// ordering awaits each response before sending the next request.
const rl = createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', (line) => { handle(line) })
rl.on('close', async () => {
  // stdin closed: the driver went away. Let running commands finish (bounded), then leave cleanly.
  const deadline = Date.now() + 5000
  while (inFlight > 0 && Date.now() < deadline) await sleep(10)
  try { await destroy(300) } catch (e) {}
  process.exit(0)
})
emit('ready', { pid: process.pid, node: process.version })
