// client.mjs's default flavour: the modules it drives, from this package (yjs 13.6 + y-websocket 3.x).
export * as Y from 'yjs'
export { WebsocketProvider } from 'y-websocket'
export * as auth from 'y-protocols/auth'
export { default as WebSocket } from 'ws'
export const packages = ['yjs', 'y-websocket', 'y-protocols', 'ws', 'lib0']
