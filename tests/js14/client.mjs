// A Yjs 14 (@y/y) client that tracks its unconfirmed updates the way the next y-websocket (4.x,
// yjs/y-websocket HEAD, src/y-websocket.js) does, driven by tests/test_confirmations.py.
//
// That client is not on npm yet, so this speaks the y-websocket protocol itself and keeps the same
// bookkeeping: every local update adds `Y.createContentIdsFromUpdate(update)` to `unconfirmed`; every
// received sync step 2 or update removes its content IDs (`Y.excludeContentIds`). The next client
// shows "synced" (green) only once `unconfirmed` is empty.
//
// Protocol with Python (one JSON object per line), as tests/js/client.mjs:
//   stdin  request : {"id": <n>, "cmd": "<name>", ...args}
//   stdout response: {"id": <n>, "ok": true, ...result}  |  {"id": <n>, "ok": false, "error": "..."}
//   stdout event   : {"event": "<name>", ...fields}  ("ready" once, at start)

import * as Y from '@y/y'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import WebSocket from 'ws'
import { createInterface } from 'node:readline'

for (const level of ['log', 'info', 'debug', 'warn', 'trace']) {
  console[level] = (...args) => console.error(...args)
}
const out = (obj) => { process.stdout.write(JSON.stringify(obj) + '\n') }

const SERVER = Symbol('server') // origin of updates received from the server
const doc = new Y.Doc()
let ws = null
let synced = false
let unconfirmed = [] // [{ ids: Y.ContentIds }], oldest first
const received = { updates: 0, bytes: 0 } // sync step 2 / update payloads received
const closes = []

const syncMessage = (type, payload) => {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 0)
  encoding.writeVarUint(e, type)
  encoding.writeVarUint8Array(e, payload)
  return encoding.toUint8Array(e)
}

doc.on('update', (update, origin) => {
  if (origin === SERVER) return
  unconfirmed.push({ ids: Y.createContentIdsFromUpdate(update) })
  if (ws !== null && ws.readyState === WebSocket.OPEN) ws.send(syncMessage(2, update))
})

const confirm = (update) => {
  const ids = Y.createContentIdsFromUpdate(update)
  unconfirmed = unconfirmed.filter(u => {
    u.ids = Y.excludeContentIds(u.ids, ids)
    return !u.ids.inserts.isEmpty() || !u.ids.deletes.isEmpty()
  })
}

const onMessage = (data) => {
  const d = decoding.createDecoder(new Uint8Array(data))
  if (decoding.readVarUint(d) !== 0) return // presence and the rest: not this client's business
  const type = decoding.readVarUint(d)
  const payload = decoding.readVarUint8Array(d)
  if (type === 0) { // the server's step 1: answer with what it lacks
    ws.send(syncMessage(1, Y.encodeStateAsUpdate(doc, payload)))
    return
  }
  received.updates++
  received.bytes += payload.length
  Y.applyUpdate(doc, payload, SERVER)
  confirm(payload)
  if (type === 1) synced = true
}

const idsJson = (idSet) => {
  const out = []
  idSet.clients.forEach((ranges, client) => {
    ranges.getIds().forEach(r => out.push([client, r.clock, r.len]))
  })
  return out
}

const waitFor = async (predicate, timeout, what) => {
  const deadline = Date.now() + timeout
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

const status = () => ({
  synced,
  text: doc.get('code').toString(),
  title: doc.get('meta').getAttr('title') ?? null,
  unconfirmed: unconfirmed.map(u => ({ inserts: idsJson(u.ids.inserts), deletes: idsJson(u.ids.deletes) })),
  received: { ...received },
  closes
})

const COMMANDS = {
  async connect ({ url, timeout = 10000 }) {
    synced = false
    const socket = new WebSocket(url)
    socket.binaryType = 'arraybuffer'
    ws = socket
    socket.on('message', onMessage)
    socket.on('close', (code) => { closes.push(code) })
    socket.on('error', () => {})
    await new Promise((resolve, reject) => {
      socket.once('open', () => { // step 1 in the open handler, as the provider does: before any answer
        socket.send(syncMessage(0, Y.encodeStateVector(doc)))
        resolve()
      })
      socket.once('error', reject)
    })
    // the provider sends whatever was edited offline in answer to the server's step 1 (above)
    await waitFor(() => synced, timeout, 'sync step 2')
    return {}
  },
  async insert ({ index, text }) { doc.get('code').insert(index, text); return {} },
  async delete ({ index, length }) { doc.get('code').delete(index, length); return {} },
  async setMeta ({ key, value }) { doc.get('meta').setAttr(key, value); return {} },
  async status () { return status() },
  async resetReceived () { received.updates = 0; received.bytes = 0; return {} },
  async waitConfirmed ({ timeout = 5000 }) {
    try {
      await waitFor(() => unconfirmed.length === 0, timeout, 'every local update to be confirmed')
    } catch (err) {
      throw new Error(`${err.message}; left: ${JSON.stringify(status().unconfirmed)}`)
    }
    return status()
  },
  // Edit, make sure the update left this process, then drop the connection before any answer is
  // read: the server has the update, its confirmation is lost with the socket.
  async insertAndDrop ({ index, text }) {
    const socket = ws
    socket.removeAllListeners('message')
    ws = null // the update handler must not send it: it is sent below, then the socket dropped
    doc.get('code').insert(index, text)
    const update = Y.encodeStateAsUpdate(doc) // everything: the server keeps what it lacks
    await new Promise(resolve => socket.send(syncMessage(2, update), resolve))
    await new Promise(resolve => setTimeout(resolve, 300)) // let the server read and commit it
    socket.terminate()
    return {}
  },
  async disconnect () {
    if (ws !== null) ws.close()
    ws = null
    return {}
  }
}

createInterface({ input: process.stdin }).on('line', async (line) => {
  if (!line.trim()) return
  let request
  try { request = JSON.parse(line) } catch { return }
  const { id, cmd, ...args } = request
  try {
    const handler = COMMANDS[cmd]
    if (handler === undefined) throw new Error(`unknown command ${cmd}`)
    out({ id, ok: true, ...(await handler(args)) })
  } catch (err) {
    out({ id, ok: false, error: String(err && err.message ? err.message : err) })
  }
})
out({ event: 'ready' })
