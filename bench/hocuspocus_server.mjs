#!/usr/bin/env node
// Hocuspocus server for the benchmark harness (`python -m bench` starts it; see bench/README.md).
//
// Usage: HOST=127.0.0.1 PORT=1234 node hocuspocus_server.mjs
//
// The plain @hocuspocus/server configuration, like for like with the in-memory reference
// (@y/websocket-server without YPERSISTENCE): no extensions (so no database, no Redis, no
// logger), no onAuthenticate hook (every token is accepted), documents in memory only and
// unloaded when their last connection leaves (the default unloadImmediately). Every other option
// keeps its default (30 s ping timeout, 2 s store debounce with nothing to store). It listens on
// HOST:PORT (loopback, a free port chosen by the harness); its default HTTP answer to `GET /`
// (200 "Welcome to Hocuspocus!") is the health check the harness waits on. SIGTERM/SIGINT stop it
// (the default stopOnSignals).

import { Server } from '@hocuspocus/server'

const host = process.env.HOST || '127.0.0.1'
const port = Number(process.env.PORT)
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`hocuspocus_server: PORT must be a TCP port, got ${JSON.stringify(process.env.PORT)}`)
  process.exit(2)
}

const server = new Server({ address: host, port, quiet: true })
await server.listen()
console.error(`hocuspocus_server: @hocuspocus/server listening on ${host}:${server.address.port}`)
