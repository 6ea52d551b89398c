// A fresh client connects and prints its document as it was when the
// provider fired 'synced', before any later message was processed.
//
// usage: node read-at-synced.mjs <serverUrl> <docName> <syncTimeoutMs>

import { connectAndCapture, parseArgs, runMain } from './lib.mjs'

const main = async () => {
  const args = parseArgs(['serverUrl', 'docName', 'syncTimeoutMs'])
  const { provider, syncMs, atSynced } = await connectAndCapture(args.serverUrl, args.docName, Number(args.syncTimeoutMs))
  provider.destroy()
  return { syncMs, ...atSynced }
}

runMain(main, { limitMs: Number(process.argv[4] || 60000) + 10000 })
