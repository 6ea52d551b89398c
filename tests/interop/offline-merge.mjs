// Client A goes offline with provider.disconnect(). A and the online client
// B edit the same Y.Text, including the same position. A reconnects with
// provider.connect(), and A, B and observer C must converge on a text that
// contains both clients' edits.
//
// usage: node offline-merge.mjs <serverUrl> <docName>

import {
  allEqual, createProvider, log, parseArgs, runMain, stateVectorBase64, summarize,
  waitFor, waitForSynced, Y
} from './lib.mjs'

const TIMEOUT_MS = 10000

const connect = async (serverUrl, docName) => {
  const doc = new Y.Doc()
  const provider = createProvider(serverUrl, docName, doc)
  await waitForSynced(provider, TIMEOUT_MS)
  return { doc, provider, text: doc.getText('text') }
}

const sameState = (x, y) => stateVectorBase64(x.doc) === stateVectorBase64(y.doc)

const main = async () => {
  const args = parseArgs(['serverUrl', 'docName'])
  const a = await connect(args.serverUrl, args.docName)
  const b = await connect(args.serverUrl, args.docName)
  const c = await connect(args.serverUrl, args.docName)

  a.text.insert(0, 'shared base\n')
  await waitFor(() => sameState(a, b) && sameState(a, c), { timeoutMs: TIMEOUT_MS, what: 'B and C to receive the base text' })

  a.provider.disconnect()
  await waitFor(() => !a.provider.wsconnected && a.provider.ws === null, { timeoutMs: TIMEOUT_MS, what: 'A to disconnect' })
  log('A is offline')

  a.doc.transact(() => {
    a.text.insert(0, '[A offline]')
    a.text.insert(a.text.length, '[A tail]')
    a.doc.getMap('map').set('offline', 'A')
  })
  b.doc.transact(() => {
    b.text.insert(0, '[B online]')
    const baseIndex = b.text.toString().indexOf('base')
    b.text.delete(baseIndex, 'base'.length)
    b.text.insert(baseIndex, 'BASE')
    b.doc.getMap('map').set('online', 'B')
  })
  await waitFor(() => sameState(b, c), { timeoutMs: TIMEOUT_MS, what: 'C to receive B\'s online edit' })
  const whileOffline = { A: summarize(a.doc), B: summarize(b.doc), C: summarize(c.doc) }

  a.provider.connect()
  await waitForSynced(a.provider, TIMEOUT_MS)
  await waitFor(() => allEqual([a.doc, b.doc, c.doc]), {
    timeoutMs: TIMEOUT_MS,
    what: 'A, B and C to converge after A reconnected',
    docs: [a.doc, b.doc, c.doc],
    describe: () => JSON.stringify({ A: a.text.toString(), B: b.text.toString(), C: c.text.toString() })
  })
  const result = {
    whileOffline,
    final: { A: summarize(a.doc), B: summarize(b.doc), C: summarize(c.doc) }
  }
  for (const client of [a, b, c]) client.provider.destroy()
  return result
}

runMain(main, { limitMs: 60000 })
