// Replay a sequential editing trace through a real Yjs client whose
// y-websocket provider sends every transaction to the server. An observer
// client on the same document shows when the server has applied everything.
//
// usage: node trace-replay.mjs <serverUrl> <docName> <tracePath> <txnsPerTransaction> <timeoutMs>
//
// The trace is gzipped JSON {endContent, txns: [{patches: [[pos, delCount,
// insertText], ...]}]} with positions in UTF-16 code units, as Y.Text uses.
// With <txnsPerTransaction> 1 every trace txn is one Yjs transaction, so one
// update message.

import { readFileSync } from 'node:fs'
import { gunzipSync } from 'node:zlib'
import { createProvider, log, parseArgs, runMain, stateVectorBase64, waitFor, waitForSynced, Y } from './lib.mjs'

const SYNC_TIMEOUT_MS = 10000
const TRANSACTIONS_PER_YIELD = 1000

const applyTxn = (text, txn) => {
  for (const [position, deleteCount, insertText] of txn.patches) {
    if (deleteCount > 0) text.delete(position, deleteCount)
    if (insertText.length > 0) text.insert(position, insertText)
  }
}

const main = async () => {
  const args = parseArgs(['serverUrl', 'docName', 'tracePath', 'txnsPerTransaction', 'timeoutMs'])
  const groupSize = Number(args.txnsPerTransaction)
  const trace = JSON.parse(gunzipSync(readFileSync(args.tracePath)).toString('utf8'))
  log(`loaded ${trace.txns.length} txns`)

  const writer = new Y.Doc()
  const writerProvider = createProvider(args.serverUrl, args.docName, writer)
  const observer = new Y.Doc()
  const observerProvider = createProvider(args.serverUrl, args.docName, observer)
  await waitForSynced(writerProvider, SYNC_TIMEOUT_MS)
  await waitForSynced(observerProvider, SYNC_TIMEOUT_MS)

  const text = writer.getText('text')
  const started = performance.now()
  let transactions = 0
  for (let start = 0; start < trace.txns.length; start += groupSize) {
    const group = trace.txns.slice(start, start + groupSize)
    writer.transact(() => group.forEach((txn) => applyTxn(text, txn)))
    transactions++
    // Let the socket write and read between batches instead of queueing
    // every message before the first one is sent.
    if (transactions % TRANSACTIONS_PER_YIELD === 0) await new Promise((resolve) => setImmediate(resolve))
  }
  const localApplyMs = performance.now() - started
  log(`applied ${transactions} transactions locally in ${localApplyMs.toFixed(0)} ms`)

  const writerState = stateVectorBase64(writer)
  await waitFor(() => stateVectorBase64(observer) === writerState, {
    timeoutMs: Number(args.timeoutMs),
    intervalMs: 100,
    what: 'the observer to receive every update through the server',
    describe: () => `observer has ${observer.getText('text').length} of ${text.length} characters`
  })
  const replayMs = performance.now() - started
  log(`observer caught up ${replayMs.toFixed(0)} ms after the replay started`)

  const result = {
    txns: trace.txns.length,
    transactions,
    txnsPerTransaction: groupSize,
    localApplyMs,
    replayMs,
    writerText: text.toString(),
    observerText: observer.getText('text').toString(),
    stateVector: writerState,
    encodedStateBytes: Y.encodeStateAsUpdate(writer).length
  }
  writerProvider.destroy()
  observerProvider.destroy()
  return result
}

runMain(main, { limitMs: Number(process.argv[6] || 300000) + 60000 })
