// A client.mjs flavour (tests/js/client.mjs): the next y-websocket major (@y/websocket 4 prerelease)
// with @y/y (Yjs 14) and @y/protocols, from this package.
export * as Y from '@y/y'
export { WebsocketProvider } from '@y/websocket'
export * as auth from '@y/protocols/auth'
export { default as WebSocket } from 'ws'
export const packages = ['@y/y', '@y/websocket', '@y/protocols', 'ws']
