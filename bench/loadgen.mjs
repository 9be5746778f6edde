#!/usr/bin/env node
// Load generator worker for the crdt-server benchmark harness (driven by `python -m bench`).
//
// Usage: node loadgen.mjs SPEC.json
//
// Real yjs 13.6 + y-websocket 3 clients. The worker talks to the harness with one JSON object
// per line: on stdout it prints {"event":"ready",...} once all its clients are synced and
// {"event":"result",...} after the measured phase; on stdin it reads the commands "start" and
// "stop". Anything else goes to stderr. It exits on "stop", on stdin EOF (harness gone) and when
// its hard deadline (spec.deadlineS) passes, so it can never outlive the harness for long.
//
// Modes (spec.mode):
//   rooms      rooms of 1 writer + N observers; writer appends a marker "#<seq>$" at F edits/s;
//              observers (same process, same clock) timestamp arrival -> latency samples.
//              Optional presence: every client updates its awareness cursor at presenceHz.
//   idle       N clients spread over rooms connect, sync and then sit idle for durationS.
//   joinstorm  one filler writes docBytes of text; on "start" `joiners` clients are created at
//              once and the time until each is synced (and holds the full text) is recorded.

import fs from 'node:fs'
import readline from 'node:readline'
import { performance, monitorEventLoopDelay } from 'node:perf_hooks'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
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

// WebSocket polyfill with per-message-deflate on or off (browsers offer it; ws does by default).
class BenchWebSocket extends WebSocket {
  constructor (url, protocols) {
    super(url, protocols, { perMessageDeflate: spec.deflate !== false, maxPayload: 256 * 1024 * 1024 })
  }
}

// ---------------------------------------------------------------- command channel
const commandWaiters = new Map()
const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  const cmd = line.trim()
  const w = commandWaiters.get(cmd)
  if (w) { commandWaiters.delete(cmd); w() }
})
rl.on('close', () => { log('stdin closed, exiting'); shutdown(0) })
const waitCommand = (cmd) => new Promise(resolve => commandWaiters.set(cmd, resolve))

// ---------------------------------------------------------------- clients
const allProviders = []
let reconnects = 0 // connection closes seen after a client first synced
let deflateNegotiated = null

let clientSeq = 0
function makeClient (room, params, { connect = true, awarenessState = undefined } = {}) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(spec.url, room, doc, {
    WebSocketPolyfill: BenchWebSocket,
    params: params || {},
    disableBc: true, // never let in-process providers of one room talk past the server
    connect: false
  })
  const n = clientSeq++
  if (awarenessState !== undefined) {
    provider.awareness.setLocalState(awarenessState)
  } else {
    provider.awareness.setLocalState({ user: { name: `bench-${n}`, color: '#30bced' } })
  }
  const client = { doc, provider, text: doc.getText('code'), synced: false, everSynced: false, n }
  provider.on('synced', (s) => {
    client.synced = s
    if (s) {
      client.everSynced = true
      if (deflateNegotiated === null && provider.ws) {
        deflateNegotiated = String(provider.ws.extensions || '').includes('permessage-deflate')
      }
    }
  })
  provider.on('connection-close', () => { if (client.everSynced) reconnects++ })
  allProviders.push(provider)
  if (connect) provider.connect()
  return client
}

const waitSynced = (client, timeoutMs) => new Promise(resolve => {
  if (client.synced) return resolve(true)
  const t = setTimeout(() => { client.provider.off('synced', h); resolve(false) }, timeoutMs)
  const h = (s) => { if (s) { clearTimeout(t); client.provider.off('synced', h); resolve(true) } }
  client.provider.on('synced', h)
})

// Connect clients with bounded concurrency (a burst of thousands of SYNs overflows backlogs).
async function connectAll (clients, concurrency, timeoutMs) {
  let next = 0
  let failed = 0
  const worker = async () => {
    while (next < clients.length) {
      const c = clients[next++]
      c.provider.connect()
      if (!await waitSynced(c, timeoutMs)) failed++
    }
  }
  const ws = []
  for (let i = 0; i < Math.min(concurrency, clients.length); i++) ws.push(worker())
  await Promise.all(ws)
  return failed
}

// ---------------------------------------------------------------- measurement helpers
function startClientMeter () {
  const h = monitorEventLoopDelay({ resolution: 10 })
  h.enable()
  const cpu0 = process.cpuUsage()
  const t0 = now()
  return () => {
    h.disable()
    const cpu = process.cpuUsage(cpu0)
    const wall = (now() - t0) / 1000
    return {
      wallS: wall,
      cpuS: (cpu.user + cpu.system) / 1e6,
      cpuPct: 100 * (cpu.user + cpu.system) / 1e6 / wall,
      loopDelayP99Ms: h.percentile(99) / 1e6,
      loopDelayMaxMs: h.max / 1e6,
      rssMB: process.memoryUsage().rss / 1048576
    }
  }
}

const round2 = (x) => Math.round(x * 100) / 100

// ---------------------------------------------------------------- mode: rooms
async function modeRooms () {
  const MARK = /#(\d+)\$/g
  const rooms = spec.rooms.map((r, ri) => ({ ...r, ri, sendTimes: [], seq: 0, writer: null, observers: [] }))
  const samples = []
  let delivered = 0
  let awarenessApplied = 0
  let measuring = false
  const clients = []
  for (const room of rooms) {
    room.writer = makeClient(room.name, room.writerParams, { connect: false })
    clients.push(room.writer)
    for (let i = 0; i < spec.observersPerRoom; i++) {
      const c = makeClient(room.name, room.readerParams, { connect: false })
      c.text.observe((ev) => {
        const t = now()
        for (const d of ev.delta) {
          if (typeof d.insert !== 'string') continue
          for (const m of d.insert.matchAll(MARK)) {
            const seq = Number(m[1])
            const sent = room.sendTimes[seq]
            if (sent === undefined) continue
            samples.push(round2(t - sent))
            delivered++
          }
        }
      })
      c.provider.awareness.on('update', (_chg, origin) => {
        if (measuring && origin === c.provider) awarenessApplied++
      })
      room.observers.push(c)
      clients.push(c)
    }
  }
  const tc0 = now()
  const failed = await connectAll(clients, spec.connectConcurrency ?? 50, (spec.connectTimeoutS ?? 60) * 1000)
  emit({ event: 'ready', clients: clients.length, failed, connectMs: now() - tc0, deflate: deflateNegotiated })

  await waitCommand('start')
  // let the join traffic (awareness of late joiners) settle before measuring
  const meter = startClientMeter()
  measuring = true
  const reconnects0 = reconnects
  const durMs = spec.durationS * 1000
  const tStart = now()
  const timers = []
  // writers: one per room, F edits/s, evenly spread phases, drift-free schedule
  const period = 1000 / spec.editsPerSec
  for (const room of rooms) {
    const w = room.writer
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
    expected: expectedFor(),
    delivered,
    samples,
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
  const failed = await connectAll(clients, spec.connectConcurrency ?? 100, (spec.connectTimeoutS ?? 60) * 1000)
  emit({ event: 'ready', clients: clients.length, failed, connectMs: now() - tc0, deflate: deflateNegotiated })
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
  const filler = makeClient(room.name, room.writerParams)
  if (!await waitSynced(filler, timeoutMs)) throw new Error('filler did not sync')
  const chunk = spec.chunkBytes ?? 4096
  const nChunks = Math.ceil(spec.docBytes / chunk)
  const tf0 = now()
  for (let i = 0; i < nChunks; i++) {
    const size = Math.min(chunk, spec.docBytes - i * chunk)
    filler.text.insert(filler.text.length, codeChunk(i, size))
    if (i % 16 === 15) {
      // let the socket drain
      while (filler.provider.ws && filler.provider.ws.bufferedAmount > 1 << 20) await sleep(5)
      await sleep(0)
    }
  }
  const target = filler.text.length
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

  await waitCommand('start')
  const meter = startClientMeter()
  const t0 = now()
  const joiners = []
  for (let i = 0; i < spec.joiners; i++) joiners.push(makeClient(room.name, room.readerParams))
  const tCreated = now()
  const times = await Promise.all(joiners.map(async (c) => {
    if (!await waitSynced(c, timeoutMs)) return null
    return now() - t0
  }))
  const complete = joiners.filter(c => c.text.length >= target).length
  const ok = times.filter(x => x !== null)
  emit({
    event: 'result',
    mode: 'joinstorm',
    joiners: spec.joiners,
    synced: ok.length,
    complete,
    createMs: tCreated - t0,
    samples: ok.map(round2),
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
  await waitCommand('stop')
  shutdown(0)
}

main()
