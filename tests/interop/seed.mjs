// One writer fills a document with Y.Text, Y.Map and Y.Array content and
// waits until an observer received it through the server. Prints the
// document summary that later clients must see.
//
// usage: node seed.mjs <serverUrl> <docName> <lineCount>

import {
  createProvider, parseArgs, runMain, stateVectorBase64, summarize, waitFor, waitForSynced, Y
} from './lib.mjs'

const TIMEOUT_MS = 30000
const LINES_PER_TRANSACTION = 100

const main = async () => {
  const args = parseArgs(['serverUrl', 'docName', 'lineCount'])
  const lineCount = Number(args.lineCount)
  const writer = new Y.Doc()
  const writerProvider = createProvider(args.serverUrl, args.docName, writer)
  await waitForSynced(writerProvider, TIMEOUT_MS)

  const text = writer.getText('text')
  for (let start = 0; start < lineCount; start += LINES_PER_TRANSACTION) {
    writer.transact(() => {
      for (let i = start; i < Math.min(start + LINES_PER_TRANSACTION, lineCount); i++) {
        text.insert(text.length, `seed line ${i}: naïve café – ${'x'.repeat(i % 40)}\n`)
      }
      writer.getMap('map').set(`batch-${start}`, { first: start, last: Math.min(start + LINES_PER_TRANSACTION, lineCount) - 1 })
      writer.getArray('array').push([start])
    })
  }

  const observer = new Y.Doc()
  const observerProvider = createProvider(args.serverUrl, args.docName, observer)
  const expected = stateVectorBase64(writer)
  await waitFor(() => stateVectorBase64(observer) === expected, {
    timeoutMs: TIMEOUT_MS,
    intervalMs: 50,
    what: 'an observer to receive the seeded content through the server'
  })
  writerProvider.destroy()
  observerProvider.destroy()
  return summarize(writer)
}

runMain(main, { limitMs: 90000 })
