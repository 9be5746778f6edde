// The Yjs side of test_pycrdt_yjs.py (pycrdt-websocket's provider tests with real Yjs clients, as our
// own scenarios): node pycrdt_yjs.mjs FLAVOUR SCENARIO SERVER_URL ROOM [TOKEN]. FLAVOUR is a client.mjs
// flavour module (Yjs 13); prints "synced" once the provider synced, then plays its part until killed.
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

const [flavour, scenario, serverUrl, room, token] = process.argv.slice(2)
const { Y, WebsocketProvider, WebSocket } = await import(pathToFileURL(resolve(flavour)).href)
const doc = new Y.Doc()
const provider = new WebsocketProvider(serverUrl, room, doc, {
  WebSocketPolyfill: WebSocket, params: token ? { token } : {}, disableBc: true
})

const SCENARIOS = {
  // answer every remote `in` of map `map` with `out` = in + 1
  increment: () => {
    const map = doc.getMap('map')
    map.observe((event) => {
      if (!event.transaction.local && event.changes.keys.has('in')) map.set('out', map.get('in') + 1)
    })
  },
  // a notebook: a cell (a Y.Map holding a Y.Text and a JSON value) and a state map
  cells: () => {
    doc.getArray('cells').push([new Y.Map([['source', new Y.Text('1 + 2')], ['metadata', { foo: 'bar' }]])])
    doc.getMap('state').set('state', { dirty: false })
  },
  // write key0, then undo whatever remote peers change in map0 (an UndoManager tracking the provider)
  undo: () => {
    const map = doc.getMap('map0')
    const undoManager = new Y.UndoManager(map, { trackedOrigins: new Set([provider]) })
    map.set('key0', 'val0')
    undoManager.clear()
    map.observe((event) => {
      if (!event.transaction.local) setTimeout(() => undoManager.undo(), 100)
    })
  }
}

provider.once('sync', () => {
  SCENARIOS[scenario]()
  console.log('synced')
})
