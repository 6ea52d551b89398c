// <clientCount> providers in this process connect to one document at the
// same moment. Each records its document inside its first 'synced' handler.
// Prints how many reached synced, how long each took and the distinct
// document summaries they saw.
//
// usage: node crowd.mjs <serverUrl> <docName> <clientCount> <syncTimeoutMs>

import { createHash } from 'node:crypto'
import { canonicalJson, createProvider, log, parseArgs, runMain, summarize, waitFor, Y } from './lib.mjs'

const main = async () => {
  const args = parseArgs(['serverUrl', 'docName', 'clientCount', 'syncTimeoutMs'])
  const clientCount = Number(args.clientCount)
  const clients = []
  for (let i = 0; i < clientCount; i++) {
    const doc = new Y.Doc()
    const provider = createProvider(args.serverUrl, args.docName, doc, { connect: false })
    const client = { doc, provider, syncMs: null, summary: null, closeCodes: [] }
    provider.on('synced', (synced) => {
      if (!synced || client.summary !== null) return
      client.syncMs = performance.now() - started
      client.summary = summarize(doc)
    })
    provider.on('connection-close', (event) => {
      if (event) client.closeCodes.push(event.code)
    })
    clients.push(client)
  }

  const started = performance.now()
  for (const client of clients) client.provider.connect()
  let timeoutError = null
  try {
    await waitFor(() => clients.every((client) => client.summary !== null), {
      timeoutMs: Number(args.syncTimeoutMs),
      what: `all ${clientCount} clients to report synced`,
      intervalMs: 10,
      describe: () => `${clients.filter((client) => client.summary !== null).length} synced`
    })
  } catch (error) {
    timeoutError = error.message
  }
  const allSyncedMs = performance.now() - started
  log(`${clients.filter((c) => c.summary !== null).length} of ${clientCount} synced in ${allSyncedMs.toFixed(0)} ms`)

  // Group identical summaries by hash, so the output stays small when all
  // clients agree and still shows every variant when they do not.
  const summaries = {}
  const summaryCounts = {}
  for (const client of clients) {
    if (client.summary === null) continue
    const json = canonicalJson(client.summary)
    const hash = createHash('sha256').update(json).digest('hex')
    summaries[hash] = client.summary
    summaryCounts[hash] = (summaryCounts[hash] || 0) + 1
  }
  const result = {
    clientCount,
    syncedCount: clients.filter((client) => client.summary !== null).length,
    timeoutError,
    allSyncedMs,
    syncMs: clients.map((client) => client.syncMs),
    closeCodes: clients.flatMap((client) => client.closeCodes),
    summaryCounts,
    summaries
  }
  for (const client of clients) client.provider.destroy()
  return result
}

runMain(main, { limitMs: Number(process.argv[5] || 60000) + 30000 })
