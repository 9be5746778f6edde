// A client.mjs flavour (tests/js/client.mjs): y-websocket 3.x with yjs 13, from this package.
export * as Y from 'yjs'
export { WebsocketProvider } from 'y-websocket'
export * as auth from 'y-protocols/auth'
export { default as WebSocket } from 'ws'
export const packages = ['yjs', 'y-websocket', 'y-protocols', 'ws', 'lib0']
