// A client.mjs flavour (tests/js/client.mjs): y-websocket 2.x with yjs 13, from this package.
export * as Y from 'yjs'
export { WebsocketProvider } from 'y-websocket-2'
export * as auth from 'y-protocols/auth'
export { default as WebSocket } from 'ws'
export const packages = ['yjs', 'y-websocket-2', 'y-protocols', 'ws', 'lib0']
