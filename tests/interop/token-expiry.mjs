// A y-websocket client whose token expires mid-session. It writes a line
// every 100 ms. y-websocket 3 treats close codes 4400-4499 as final and
// emits 'closed' instead of reconnecting, so the application gets a new
// token, puts it in `params` and calls `connect()`. The sync handshake then
// sends whatever the relay did not apply. The result lists the lines
// written and the close codes seen.
//
// Usage: node token-expiry.mjs <serverUrl> <docName> <shortToken> <freshToken>

import { Y, createProvider, log, parseArgs, runMain, sleep, waitFor } from './lib.mjs'

const TIMEOUT_MS = 15000
const LINE_INTERVAL_MS = 100

const main = async () => {
  const args = parseArgs(['serverUrl', 'docName', 'shortToken', 'freshToken'])
  const doc = new Y.Doc()
  const text = doc.getText('text')
  const provider = createProvider(args.serverUrl, args.docName, doc, { params: { token: args.shortToken } })
  const closes = []
  provider.on('closed', (event) => {
    closes.push({ code: event.code, reason: event.reason, atMs: Math.round(performance.now()) })
    if (event.code === 4401) {
      // The provider builds its URL from `params` on every connect.
      provider.params.token = args.freshToken
      provider.connect()
    }
  })

  let written = 0
  const writer = setInterval(() => {
    text.insert(text.length, `line-${written};`)
    written++
  }, LINE_INTERVAL_MS)

  await waitFor(() => closes.length > 0, { timeoutMs: TIMEOUT_MS, what: 'the close after the token expired' })
  log(`closed with ${closes[0].code} after ${written} lines; waiting for the reconnect`)
  await waitFor(() => provider.wsconnected && provider.synced, {
    timeoutMs: TIMEOUT_MS, what: 'the reconnect with the new token'
  })
  await sleep(500)
  clearInterval(writer)
  text.insert(text.length, 'after;')
  await sleep(500)

  const result = { closes, written, text: text.toString(), connected: provider.wsconnected }
  provider.destroy()
  return result
}

runMain(main, { limitMs: 60000 })
