// A client that sets an awareness state, renews it every <renewMs> ms and
// stays connected until its stdin closes. awareness.mjs runs it as a child
// process so that it can be killed or frozen like a crashed browser tab.
//
// usage: node awareness-peer.mjs <serverUrl> <docName> <userName> <renewMs>
// Prints {"event": "ready", "clientID": N} once synced.

import { createProvider, emitEvent, log, parseArgs, waitForSynced, Y } from './lib.mjs'

const args = parseArgs(['serverUrl', 'docName', 'userName', 'renewMs'])
const doc = new Y.Doc()
const provider = createProvider(args.serverUrl, args.docName, doc)
const state = { user: { name: args.userName, color: '#30bced' } }
provider.awareness.setLocalState(state)

// The parent closes our stdin when it is done or dies, so this process never
// outlives the scenario.
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()

// y-protocols renews a local state only every 15 s. Renewing faster keeps
// the state alive on a server whose awareness timeout is shorter than that.
setInterval(() => provider.awareness.setLocalState(state), Number(args.renewMs))

waitForSynced(provider, 10000).then(() => {
  emitEvent('ready', { clientID: doc.clientID })
}, (error) => {
  log(`awareness peer failed: ${error.stack}`)
  process.exit(1)
})
