#!/usr/bin/env node
// Load generator worker for the crdt-server benchmark harness (driven by `python -m bench`).
//
// Usage: node loadgen.mjs SPEC.json
//
// Real yjs 13.6 clients: y-websocket 3 WebsocketProvider, or with spec.protocol "hocuspocus" the
// @hocuspocus/provider HocuspocusProvider (its own framing: the document name starts every message,
// and an auth message opens each document). The worker talks to the harness with one JSON object
// per line: on stdout it prints {"event":"ready",...} once all its clients are synced and
// {"event":"result",...} after the measured phase; on stdin it reads the commands "start",
// "drain {room: sent}" (observers-only workers) and "stop". Anything else goes to stderr. It exits on "stop", on stdin EOF (harness gone) and when
// its hard deadline (spec.deadlineS) passes, so it can never outlive the harness for long.
//
// Modes (spec.mode):
//   rooms      rooms of 1 writer + N observers; writer appends a marker "#<seq>$" at F edits/s;
//              observers (same process, same clock) timestamp arrival -> latency samples.
//              Optional presence: every observer updates its awareness cursor at presenceHz.
//              With spec.secondary the worker holds only observers (deliveries counted only).
//   idle       N clients spread over rooms connect, sync and then sit idle for durationS.
//   joinstorm  one filler writes docBytes of text; on "start" `joiners` clients are created at
//              once and the time until each is synced (and holds the full text) is recorded.

import fs from 'node:fs'
import readline from 'node:readline'
import { performance, monitorEventLoopDelay } from 'node:perf_hooks'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { HocuspocusProvider } from '@hocuspocus/provider'
import { removeAwarenessStates, outdatedTimeout } from 'y-protocols/awareness'

const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
const HOCUSPOCUS = spec.protocol === 'hocuspocus'
const tag = `[loadgen ${spec.workerId ?? 0}]`
const log = (...a) => console.error(tag, ...a)

process.setMaxListeners(0) // every provider registers a process 'exit' handler

const hardDeadline = setTimeout(() => {
  log(`hard deadline of ${spec.deadlineS}s reached, exiting`)
  process.exit(3)
}, (spec.deadlineS ?? 600) * 1000)
hardDeadline.unref()

const emit = (obj) => { process.stdout.write(JSON.stringify(obj) + '\n') }
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
const now = () => performance.now()

// messages/bytes received by all clients during the measured phase, by protocol message type
let rxCounting = false
const rxCount = {}
const rxBytes = {}

// The kind of a received binary message: `sync0` / `sync1` / `sync2` (sync step 1 / step 2 /
// update), `awareness`, or the protocol's other types. y-websocket messages start with the type;
// Hocuspocus messages start with the document name (a varString), then the type (its 0 and 1 are
// y-websocket's; 4 is a sync reply) and its own types (auth, sync-status acks, ...).
const HOCUSPOCUS_TYPES = { 2: 'auth', 3: 'queryAwareness', 5: 'stateless', 6: 'broadcastStateless', 7: 'close', 8: 'syncStatus' }
function readVarUint (u, pos) {
  let n = 0
  let mult = 1
  while (pos < u.length) {
    const b = u[pos++]
    n += (b & 0x7f) * mult
    if (b < 0x80) break
    mult *= 128
  }
  return [n, pos]
}
function messageKind (u) {
  let pos = 0
  if (HOCUSPOCUS) {
    const [nameLength, p] = readVarUint(u, 0)
    pos = p + nameLength
  }
  const [type, p] = readVarUint(u, pos)
  if (type === 0 || (HOCUSPOCUS && type === 4)) return `sync${readVarUint(u, p)[0]}`
  if (type === 1) return 'awareness'
  return (HOCUSPOCUS && HOCUSPOCUS_TYPES[type]) || `type${type}`
}

// WebSocket polyfill with per-message-deflate on or off (browsers offer it; ws does by default).
// It also notes when the first sync step 2 is dispatched to the client, before the client applies
// it (join storm: separates server/transfer time from client-side apply time). Its own 'message'
// listener is registered first, so it runs just before the provider's (onmessage for y-websocket,
// addEventListener for Hocuspocus) on every message.
class BenchWebSocket extends WebSocket {
  constructor (url, protocols) {
    super(url, protocols, { perMessageDeflate: spec.deflate !== false, maxPayload: 256 * 1024 * 1024 })
    this.benchStep2At = null
    this.on('message', (data, isBinary) => {
      if (!isBinary || (!rxCounting && this.benchStep2At !== null)) return
      const u = data instanceof ArrayBuffer ? new Uint8Array(data) : data // binaryType arraybuffer (both providers)
      const kind = messageKind(u)
      if (this.benchStep2At === null && kind === 'sync1') this.benchStep2At = now()
      if (rxCounting) {
        rxCount[kind] = (rxCount[kind] || 0) + 1
        rxBytes[kind] = (rxBytes[kind] || 0) + u.byteLength
      }
    })
  }
}

// ---------------------------------------------------------------- command channel
const commandWaiters = new Map()
const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  const text = line.trim()
  const sp = text.indexOf(' ')
  const cmd = sp < 0 ? text : text.slice(0, sp)
  const arg = sp < 0 ? '' : text.slice(sp + 1)
  if (cmd === 'stop') { shutdown(0); return } // at any time, also mid-scenario
  const w = commandWaiters.get(cmd)
  if (w) { commandWaiters.delete(cmd); w(arg) } else pendingCommands.set(cmd, arg) // early: keep it
})
rl.on('close', () => { log('stdin closed, exiting'); shutdown(0) })
const pendingCommands = new Map()
const waitCommand = (cmd) => new Promise(resolve => {
  if (pendingCommands.has(cmd)) {
    const arg = pendingCommands.get(cmd)
    pendingCommands.delete(cmd)
    resolve(arg)
  } else {
    commandWaiters.set(cmd, resolve)
  }
})

// ---------------------------------------------------------------- clients
const allProviders = []
let reconnects = 0 // connection closes seen after a client first synced
let deflateNegotiated = null

// Real clients join at random times, so their 15 s awareness renewals (and the 3 s timer that
// triggers them) are spread out. Clients created in one tight loop would renew in lock-step and
// hit the server with synchronized bursts (n renewals x n recipients at once). Re-phase the
// y-protocols Awareness check timer (same logic as y-protocols 1.0.x) and the last renewal time
// uniformly at random, i.e. the steady state of clients that joined at random moments.
function spreadAwarenessTimers (aw) {
  clearInterval(aw._checkInterval)
  const period = Math.floor(outdatedTimeout / 10)
  const check = () => {
    const t = Date.now()
    const own = aw.meta.get(aw.clientID)
    if (aw.getLocalState() !== null && own && outdatedTimeout / 2 <= t - own.lastUpdated) {
      aw.setLocalState(aw.getLocalState())
    }
    const remove = []
    aw.meta.forEach((meta, clientid) => {
      if (clientid !== aw.clientID && outdatedTimeout <= t - meta.lastUpdated && aw.states.has(clientid)) remove.push(clientid)
    })
    if (remove.length > 0) removeAwarenessStates(aw, remove, 'timeout')
  }
  aw._checkInterval = setTimeout(() => {
    check()
    aw._checkInterval = setInterval(check, period) // Awareness.destroy() clears _checkInterval
  }, Math.random() * period)
  const own = aw.meta.get(aw.clientID)
  if (own) own.lastUpdated -= Math.random() * (outdatedTimeout / 2)
}

// One client = one provider = one socket, as one browser tab editing one document. Hocuspocus can
// multiplex several documents over one HocuspocusProviderWebsocket, but only different documents
// (its providers are keyed by document name) and only when the app shares the socket on purpose;
// given a `url` the provider owns its socket, which is the deployment this models.
function makeProvider (room, doc, params) {
  if (HOCUSPOCUS) {
    const provider = new HocuspocusProvider({
      url: spec.url,
      name: room,
      document: doc,
      token: (params && params.token) || null, // sent in its auth message; the bench server checks none
      WebSocketPolyfill: BenchWebSocket,
      autoConnect: false
    })
    unhookAwarenessEvents(provider)
    return provider
  }
  return new WebsocketProvider(spec.url, room, doc, {
    WebSocketPolyfill: BenchWebSocket,
    params: params || {},
    disableBc: true, // never let in-process providers of one room talk past the server
    connect: false
  })
}

// HocuspocusProvider feeds its 'awarenessUpdate' and 'awarenessChange' events from two listeners on
// its Awareness that copy every state into a new array on every awareness update, whether or not
// anyone listens. A browser tab pays that for one client; a load generator hosting hundreds of
// clients of one room pays it per client per update (200 clients at 1 Hz: 40,000 copies of 200
// states a second), saturates, and the Hocuspocus column would time the load generator instead of
// the server. Nothing here listens to those events, so remove exactly those two listeners; the one
// that sends awareness to the server stays. Fails loudly if the provider's internals differ.
function unhookAwarenessEvents (provider) {
  const aw = provider.awareness
  const send = provider.boundAwarenessUpdateHandler
  const update = aw._observers && aw._observers.get('update')
  const change = aw._observers && aw._observers.get('change')
  if (!update || !change || update.size !== 2 || change.size !== 1 || !update.has(send)) {
    throw new Error('unexpected HocuspocusProvider awareness listeners; check unhookAwarenessEvents against the pinned version')
  }
  for (const f of [...update]) if (f !== send) aw.off('update', f)
  for (const f of [...change]) aw.off('change', f)
}

const socketOf = (client) => HOCUSPOCUS ? client.provider.configuration.websocketProvider.webSocket : client.provider.ws

function connectClient (client) {
  // HocuspocusProvider.connect() returns its retry promise: never leave a rejection unhandled
  Promise.resolve(client.provider.connect()).catch((e) => log('connect failed', e && e.message ? e.message : e))
}

let clientSeq = 0
function makeClient (room, params, { connect = true, awarenessState = undefined } = {}) {
  const doc = new Y.Doc()
  const provider = makeProvider(room, doc, params)
  const n = clientSeq++
  if (awarenessState !== undefined) {
    provider.awareness.setLocalState(awarenessState)
  } else {
    provider.awareness.setLocalState({ user: { name: `bench-${n}`, color: '#30bced' } })
  }
  if (spec.spreadAwareness !== false) spreadAwarenessTimers(provider.awareness)
  const client = { doc, provider, text: doc.getText('code'), synced: false, everSynced: false, n, syncWaiters: new Set() }
  const onSynced = (s) => {
    client.synced = s
    if (!s) return
    client.everSynced = true
    const ws = socketOf(client)
    if (deflateNegotiated === null && ws) {
      deflateNegotiated = String(ws.extensions || '').includes('permessage-deflate')
    }
    for (const wake of [...client.syncWaiters]) wake(true)
  }
  const onClose = () => {
    client.synced = false
    if (client.everSynced) reconnects++
  }
  if (HOCUSPOCUS) {
    provider.on('synced', ({ state }) => onSynced(state)) // emitted only when it becomes synced
    provider.on('disconnect', onClose) // once per socket close (its 'close' also fires on a server CLOSE message)
  } else {
    provider.on('synced', onSynced)
    provider.on('connection-close', onClose)
  }
  allProviders.push(provider)
  if (connect) connectClient(client)
  return client
}

const waitSynced = (client, timeoutMs) => new Promise(resolve => {
  if (client.synced) return resolve(true)
  const done = (ok) => { clearTimeout(t); client.syncWaiters.delete(done); resolve(ok) }
  const t = setTimeout(() => done(false), timeoutMs)
  client.syncWaiters.add(done)
})

// Connect clients with bounded concurrency (a burst of thousands of SYNs overflows backlogs).
// Gives up at the deadline: clients not synced by then are destroyed and counted as failed, so a
// server that cannot take the load yields a (smaller) measurement instead of a hang.
async function connectAll (clients, concurrency, deadlineS) {
  const deadline = now() + deadlineS * 1000
  let next = 0
  const worker = async () => {
    while (next < clients.length && now() < deadline) {
      const c = clients[next++]
      connectClient(c)
      await waitSynced(c, Math.max(1, deadline - now()))
    }
  }
  const ws = []
  for (let i = 0; i < Math.min(concurrency, clients.length); i++) ws.push(worker())
  await Promise.all(ws)
  let failed = 0
  for (const c of clients) {
    if (!c.everSynced) { // never synced: drop it (one that synced and is reconnecting stays)
      failed++
      c.failed = true
      c.provider.destroy()
    }
  }
  if (failed) log(`${failed} of ${clients.length} clients never synced within ${deadlineS}s`)
  return failed
}

// ---------------------------------------------------------------- measurement helpers
function startClientMeter () {
  const h = monitorEventLoopDelay({ resolution: LOOP_RES_MS })
  h.enable()
  const cpu0 = process.cpuUsage()
  const t0 = now()
  rxCounting = true
  return () => {
    rxCounting = false
    h.disable()
    const cpu = process.cpuUsage(cpu0)
    const wall = (now() - t0) / 1000
    return {
      wallS: wall,
      cpuS: (cpu.user + cpu.system) / 1e6,
      cpuPct: 100 * (cpu.user + cpu.system) / 1e6 / wall,
      // the histogram records whole timer intervals: subtract the sampling resolution
      loopDelayP99Ms: Math.max(0, h.percentile(99) / 1e6 - LOOP_RES_MS),
      loopDelayMaxMs: Math.max(0, h.max / 1e6 - LOOP_RES_MS),
      rssMB: process.memoryUsage().rss / 1048576,
      rxPerS: Object.fromEntries(Object.entries(rxCount).map(([k, v]) => [k, Math.round(v / wall)])),
      rxKBPerS: Object.fromEntries(Object.entries(rxBytes).map(([k, v]) => [k, Math.round(v / wall / 1024)]))
    }
  }
}

const LOOP_RES_MS = 10
const round2 = (x) => Math.round(x * 100) / 100

// ---------------------------------------------------------------- mode: rooms
// A room's writer and the observers that measure latency share this process (one clock). With
// spec.secondary, this worker holds only extra observers of rooms whose writer is in another
// worker: they count deliveries (no latency), and drain on the harness's "drain {room: sent}".
async function modeRooms () {
  const MARK = /#(\d+)\$/g
  const secondary = spec.secondary === true
  const rooms = spec.rooms.map((r, ri) => ({ ...r, ri, sendTimes: [], seq: 0, writer: null, observers: [], delivered: 0 }))
  const samples = []
  let delivered = 0
  let awarenessApplied = 0
  let measuring = false
  let tStart = 0
  const timeline = [] // max latency per second of the window, by send time (diagnostic)
  const clients = []
  for (const room of rooms) {
    if (!secondary) {
      room.writer = makeClient(room.name, room.writerParams, { connect: false })
      clients.push(room.writer)
    }
    for (let i = 0; i < spec.observersPerRoom; i++) {
      const c = makeClient(room.name, room.readerParams, { connect: false })
      c.text.observe((ev) => {
        const t = now()
        for (const d of ev.delta) {
          if (typeof d.insert !== 'string') continue
          for (const m of d.insert.matchAll(MARK)) {
            if (secondary) { delivered++; room.delivered++; continue }
            const seq = Number(m[1])
            const sent = room.sendTimes[seq]
            if (sent === undefined) continue
            const lat = t - sent
            samples.push(round2(lat))
            delivered++
            const b = Math.floor((sent - tStart) / 1000)
            if (b >= 0 && !(timeline[b] >= lat)) timeline[b] = lat
          }
        }
      })
      c.provider.awareness.on('update', ({ added, updated, removed }, origin) => {
        // client states received and applied (a coalesced message can carry many)
        if (measuring && origin === c.provider) awarenessApplied += added.length + updated.length + removed.length
      })
      room.observers.push(c)
      clients.push(c)
    }
  }
  const tc0 = now()
  const failed = await connectAll(clients, spec.connectConcurrency ?? 50, spec.connectTimeoutS ?? 60)
  emit({ event: 'ready', clients: clients.length, failed, connectMs: now() - tc0, deflate: deflateNegotiated, reconnects })

  await waitCommand('start') // the harness has let the join-time awareness traffic settle
  const meter = startClientMeter()
  measuring = true
  const reconnects0 = reconnects
  const durMs = spec.durationS * 1000
  tStart = now()
  const timers = []
  // writers: one per room, F edits/s, evenly spread phases, drift-free schedule
  const period = 1000 / spec.editsPerSec
  for (const room of rooms) {
    const w = room.writer
    if (!w || w.failed) continue // no writer here, or it never synced: the room sends nothing (and expects nothing)
    const phase = (room.ri / rooms.length) * period
    let k = 0
    const tick = () => {
      const t = now()
      if (t - tStart >= durMs) return
      const seq = room.seq++
      room.sendTimes[seq] = now()
      w.text.insert(w.text.length, `#${seq}$ `)
      k++
      const nextAt = tStart + phase + k * period
      timers.push(setTimeout(tick, Math.max(0, nextAt - now())))
    }
    timers.push(setTimeout(tick, phase))
  }
  // presence: every observer moves its cursor at presenceHz (the writer only types)
  if (spec.presenceHz > 0) {
    const pPeriod = 1000 / spec.presenceHz
    let idx = 0
    const presenceClients = rooms.flatMap(r => r.observers)
    const total = presenceClients.length
    for (const c of presenceClients) {
      const phase = (idx++ / total) * pPeriod
      let k = 0
      const tick = () => {
        if (now() - tStart >= durMs) return
        k++
        const pos = (c.n * 7 + k) % 1000
        c.provider.awareness.setLocalStateField('cursor', { anchor: pos, head: pos + (k % 3) })
        const nextAt = tStart + phase + k * pPeriod
        timers.push(setTimeout(tick, Math.max(0, nextAt - now())))
      }
      timers.push(setTimeout(tick, phase))
    }
  }
  await sleep(durMs + 20)
  for (const t of timers) clearTimeout(t)
  if (secondary) {
    // the primary worker has the writers: the harness tells us how much each room sent
    const sentBy = JSON.parse(await waitCommand('drain'))
    for (const r of rooms) r.seq = sentBy[r.name] ?? 0
  }
  const sent = rooms.reduce((a, r) => a + r.seq, 0)
  // expected: every synced observer should see every edit of its room's writer
  const expectedFor = () => rooms.reduce((a, r) => a + r.seq * r.observers.filter(o => o.everSynced).length, 0)
  const drainDeadline = now() + (spec.drainS ?? 5) * 1000
  while (delivered < expectedFor() && now() < drainDeadline) await sleep(25)
  measuring = false
  const client = meter()
  emit({
    event: 'result',
    mode: 'rooms',
    sent,
    planned: secondary ? 0 : rooms.filter(r => !r.writer.failed).length * Math.floor(spec.editsPerSec * spec.durationS),
    sentByRoom: Object.fromEntries(rooms.map(r => [r.name, r.seq])),
    secondary,
    observers: rooms.reduce((a, r) => a + r.observers.filter(o => o.everSynced).length, 0),
    expected: expectedFor(),
    delivered,
    samples,
    timelineMaxMs: Array.from(timeline, x => round2(x ?? 0)),
    awarenessAppliedPerS: awarenessApplied / client.wallS,
    windowS: durMs / 1000,
    drainS: (now() - tStart - durMs) / 1000,
    reconnects: reconnects - reconnects0,
    client
  })
}

// ---------------------------------------------------------------- mode: idle
async function modeIdle () {
  const clients = []
  for (let i = 0; i < spec.rooms.length; i++) {
    const room = spec.rooms[i]
    for (let k = 0; k < spec.clientsPerRoom; k++) {
      clients.push(makeClient(room.name, k === 0 ? room.writerParams : room.readerParams, { connect: false }))
    }
  }
  const tc0 = now()
  const failed = await connectAll(clients, spec.connectConcurrency ?? 100, spec.connectTimeoutS ?? 60)
  emit({ event: 'ready', clients: clients.length, failed, connectMs: now() - tc0, deflate: deflateNegotiated, reconnects })
  await waitCommand('start')
  const meter = startClientMeter()
  const reconnects0 = reconnects
  await sleep(spec.durationS * 1000)
  const stillSynced = clients.filter(c => c.synced).length
  emit({ event: 'result', mode: 'idle', clients: clients.length, stillSynced, reconnects: reconnects - reconnects0, client: meter() })
}

// ---------------------------------------------------------------- mode: joinstorm
function codeChunk (i, bytes) {
  // plausible source text, ASCII, exactly `bytes` long
  let s = ''
  let j = 0
  while (s.length < bytes) {
    s += `def handler_${i}_${j}(request, limit=${j % 97}):\n    return [x * ${j % 13} for x in range(limit)]  # ${i}\n`
    j++
  }
  return s.slice(0, bytes)
}

async function modeJoinstorm () {
  const room = spec.rooms[0]
  const timeoutMs = (spec.connectTimeoutS ?? 60) * 1000
  let target = 0
  if (spec.fill === false) {
    // only joins; worker 0 has filled and verified the document before this worker was started
    target = spec.docBytes
    emit({ event: 'ready', clients: 0, failed: 0, fillMs: 0, textLength: target, docUpdateBytes: null, deflate: null })
  } else {
    const filler = makeClient(room.name, room.writerParams)
    if (!await waitSynced(filler, timeoutMs)) throw new Error('filler did not sync')
    // Many small inserts at pseudo-random positions, so the document has thousands of items
    // (like text typed and edited over time), not one long run.
    const chunk = spec.chunkBytes ?? 1024
    const nChunks = Math.ceil(spec.docBytes / chunk)
    let rnd = 12345
    const nextRnd = () => { rnd = (rnd * 1103515245 + 12345) & 0x7fffffff; return rnd }
    const tf0 = now()
    for (let i = 0; i < nChunks; i++) {
      const size = Math.min(chunk, spec.docBytes - i * chunk)
      const len = filler.text.length
      filler.text.insert(len === 0 ? 0 : nextRnd() % (len + 1), codeChunk(i, size))
      if (i % 64 === 63) {
        // let the socket drain
        while (socketOf(filler) && socketOf(filler).bufferedAmount > 1 << 20) await sleep(5)
        await sleep(1)
      }
    }
    target = filler.text.length
    // confirm the server holds the full text: a verifier client must sync to it
    let verified = false
    const vDeadline = now() + timeoutMs
    while (!verified && now() < vDeadline) {
      const v = makeClient(room.name, room.readerParams)
      if (await waitSynced(v, timeoutMs)) {
        const t0 = now()
        while (v.text.length < target && now() - t0 < 2000) await sleep(20)
        verified = v.text.length >= target
      }
      v.provider.destroy()
      if (!verified) await sleep(250)
    }
    const docUpdateBytes = Y.encodeStateAsUpdate(filler.doc).length
    emit({ event: 'ready', clients: 1, failed: verified ? 0 : 1, fillMs: now() - tf0, textLength: target, docUpdateBytes, deflate: deflateNegotiated })
  }

  await waitCommand('start')
  const meter = startClientMeter()
  const rounds = spec.rounds ?? 1
  const samples = []
  const step2Samples = []
  let applyTotalMs = 0
  let synced = 0
  let complete = 0
  let createMs = 0
  for (let round = 0; round < rounds; round++) {
    if (round > 0) await sleep(1000)
    const t0 = now()
    const joiners = []
    for (let i = 0; i < spec.joiners; i++) joiners.push(makeClient(room.name, room.readerParams))
    createMs = Math.max(createMs, now() - t0)
    const times = await Promise.all(joiners.map(async (c) => {
      if (!await waitSynced(c, (spec.joinTimeoutS ?? 30) * 1000)) return null
      const ws = socketOf(c)
      const step2 = ws && ws.benchStep2At !== null ? ws.benchStep2At - t0 : null
      return { synced: now() - t0, step2 }
    }))
    complete += joiners.filter(c => c.text.length >= target).length
    for (const x of times) {
      if (x === null) continue
      synced++
      samples.push(round2(x.synced))
      if (x.step2 !== null) {
        step2Samples.push(round2(x.step2))
        applyTotalMs += x.synced - x.step2
      }
    }
    for (const c of joiners) c.provider.destroy()
  }
  emit({
    event: 'result',
    mode: 'joinstorm',
    rounds,
    joiners: spec.joiners,
    synced,
    complete,
    createMs,
    samples,
    step2Samples,
    applyTotalMs: applyTotalMs / rounds,
    client: meter()
  })
}

// ---------------------------------------------------------------- main
let shuttingDown = false
function shutdown (code) {
  if (shuttingDown) return
  shuttingDown = true
  for (const p of allProviders) {
    try { p.destroy() } catch (e) {}
  }
  setTimeout(() => process.exit(code), 300).unref()
  setTimeout(() => process.exit(code), 300)
}

process.on('uncaughtException', (e) => { log('uncaught', e && e.stack ? e.stack : e) })

async function main () {
  try {
    if (spec.mode === 'rooms') await modeRooms()
    else if (spec.mode === 'idle') await modeIdle()
    else if (spec.mode === 'joinstorm') await modeJoinstorm()
    else throw new Error('unknown mode ' + spec.mode)
  } catch (e) {
    log('error', e && e.stack ? e.stack : e)
    emit({ event: 'error', message: String(e && e.message ? e.message : e) })
  }
  // now wait for "stop" (or stdin EOF, or the hard deadline)
}

main()
