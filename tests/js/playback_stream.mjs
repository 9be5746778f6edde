// Decode GET /api/sessions/{id}/playback/updates (docs/playback.md) and replay it with Yjs.
// Usage: node playback_stream.mjs <base-url> <session-id> <token> [to_seq]
// Prints one JSON line: {text, lastSeq, records, participants: [[seq, role, connId, name, ts], ...]}.
import * as Y from 'yjs'

const [base, sid, token, toSeq] = process.argv.slice(2)
const doc = new Y.Doc()
const participants = []
let from = 1
let lastSeq = 0
let records = 0
const decoder = new TextDecoder('utf-8', { fatal: true })

for (;;) {
  const q = new URLSearchParams({ from_seq: String(from) })
  if (toSeq) q.set('to_seq', toSeq)
  const res = await fetch(`${base}/api/sessions/${sid}/playback/updates?${q}`, {
    headers: { Authorization: `Bearer ${token}` }
  })
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`)
  if (res.headers.get('content-type') !== 'application/octet-stream') throw new Error('wrong content type')
  const buf = new Uint8Array(await res.arrayBuffer())
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  let pos = 0
  const str = () => {
    const n = view.getUint16(pos)
    const s = decoder.decode(buf.subarray(pos + 2, pos + 2 + n))
    pos += 2 + n
    return s
  }
  doc.transact(() => {
    while (pos < buf.length) {
      const len = view.getUint32(pos)
      const end = pos + 4 + len
      if (end > buf.length) throw new Error('truncated record')
      const seq = Number(view.getBigUint64(pos + 4))
      const ts = view.getFloat64(pos + 12)
      pos += 20
      const role = str(); const connId = str(); const name = str()
      if (seq <= lastSeq) throw new Error(`seq ${seq} out of order`)
      Y.applyUpdate(doc, buf.subarray(pos, end))
      participants.push([seq, role, connId, name, ts])
      lastSeq = seq
      records++
      pos = end
    }
  })
  const next = res.headers.get('x-next-from-seq')
  if (next === null) break
  from = Number(next)
}
process.stdout.write(JSON.stringify({ text: doc.getText('code').toString(), lastSeq, records, participants }) + '\n')
