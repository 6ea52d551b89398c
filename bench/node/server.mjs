// The Node reference server of y-websocket, started for bench/versus_node.py.
//
// This does what the `y-websocket-server` command of @y/websocket-server
// 0.1.1 does (its src/server.js): an HTTP server that responds "okay" to
// any request and hands every WebSocket upgrade to `setupWSConnection`. The
// differences are that the address comes from the command line and the
// server listens on 127.0.0.1 only. The `ws` module is resolved from the
// package's own folder, so the server runs on the `ws` version that the
// package's command uses (6.x, its optional dependency), not on the newer
// one that the load generator uses.
//
// Documents stay in memory unless YPERSISTENCE names a folder, in which case
// utils.js stores them in LevelDB through y-leveldb. The benchmark sets it
// only for the cold-load scenario.
//
//   node server.mjs <port>

import http from 'node:http'
import { createRequire } from 'node:module'
import { setupWSConnection } from '@y/websocket-server/utils'

const HOST = '127.0.0.1'

const port = Number.parseInt(process.argv[2] ?? '', 10)
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  process.stderr.write(`invalid port ${JSON.stringify(process.argv[2])}; usage: node server.mjs <port>\n`)
  process.exit(2)
}

const requireFromServer = createRequire(createRequire(import.meta.url).resolve('@y/websocket-server/package.json'))
const WebSocket = requireFromServer('ws')
const wsVersion = requireFromServer('ws/package.json').version

const wss = new WebSocket.Server({ noServer: true })
wss.on('connection', setupWSConnection)

const server = http.createServer((_request, response) => {
  response.writeHead(200, { 'Content-Type': 'text/plain' })
  response.end('okay')
})

server.on('upgrade', (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, (ws) => {
    wss.emit('connection', ws, request)
  })
})

server.listen(port, HOST, () => {
  const persistence = process.env.YPERSISTENCE ? `LevelDB in ${process.env.YPERSISTENCE}` : 'none'
  process.stderr.write(`listening on ${HOST}:${port} (ws ${wsVersion}, persistence: ${persistence})\n`)
})

// Without a handler Node ends on SIGTERM at once; closing the listener first
// lets LevelDB finish the writes it has queued.
process.on('SIGTERM', () => {
  server.close()
  wss.clients.forEach((ws) => ws.terminate())
  setTimeout(() => process.exit(0), 500).unref()
})
