// Many real y-websocket WebsocketProviders in one Node process (one process per client is too
// heavy for hundreds): `node crowd.mjs <serverUrl> <room> <token> <count>`.
// Driven over stdin/stdout, one JSON object per line:
//   {"cmd": "report"}  -> {"ok": true, "count", "connected", "synced", "closedForGood", "distinctTexts", "closes": {code: n}}
//   {"cmd": "mark"}    -> every provider appends "<its index>;" to the shared text
//   {"cmd": "text", "i": n} -> {"ok": true, "text": provider n's text}
// stdout carries nothing else (console output goes to stderr). Ends when stdin closes.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { createInterface } from 'node:readline'

for (const level of ['log', 'info', 'debug', 'warn', 'trace']) {
  console[level] = (...args) => console.error(...args)
}
process.setMaxListeners(0) // every provider adds an exit listener
const out = (obj) => { process.stdout.write(JSON.stringify(obj) + '\n') }

const [serverUrl, room, token, countArg] = process.argv.slice(2)
const count = Number(countArg)
const clients = []
for (let i = 0; i < count; i++) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(serverUrl, room, doc, {
    WebSocketPolyfill: WebSocket, params: { token }, disableBc: true
  })
  const c = { doc, provider, closedForGood: null, closes: {} }
  provider.on('connection-close', (ev) => {
    if (ev != null) c.closes[ev.code] = (c.closes[ev.code] || 0) + 1
  })
  provider.on('closed', ({ code }) => { c.closedForGood = code })
  provider.on('connection-error', () => {})
  provider.awareness.setLocalStateField('user', { name: 'crowd-' + i, color: '#888888' })
  clients.push(c)
}

const report = () => {
  const closes = {}
  for (const c of clients) for (const [code, n] of Object.entries(c.closes)) closes[code] = (closes[code] || 0) + n
  return {
    count,
    connected: clients.filter((c) => c.provider.wsconnected).length,
    synced: clients.filter((c) => c.provider.synced).length,
    closedForGood: clients.filter((c) => c.closedForGood !== null).length,
    distinctTexts: new Set(clients.map((c) => c.doc.getText('code').toString())).size,
    closes
  }
}

const commands = {
  report,
  mark: () => {
    clients.forEach((c, i) => { const t = c.doc.getText('code'); t.insert(t.length, `${i};`) })
    return {}
  },
  text: ({ i }) => ({ text: clients[i].doc.getText('code').toString() })
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', (line) => {
  if (!line.trim()) return
  try {
    const req = JSON.parse(line)
    out({ ...commands[req.cmd](req), ok: true })
  } catch (e) {
    out({ ok: false, error: String(e && e.message ? e.message : e) })
  }
})
rl.on('close', () => {
  for (const c of clients) c.provider.destroy()
  process.exit(0)
})
