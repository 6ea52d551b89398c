// Several providers on each relay of a mesh edit Y.Text, Y.Map and Y.Array
// of two documents at the same time. When every client of a document has
// the same state, a fresh client connects to each relay and its document is
// captured at 'synced'. Prints every client's state vector and content.
//
// usage: node mesh-converge.mjs <relayUrls> <firstDoc> <secondDoc> <clientsPerRelay> <editsPerClient> <seed>
// <relayUrls> is a comma-separated list of WebSocket base URLs.

import {
  allEqual, clientIds, connectAndCapture, createProvider, log, parseArgs, runMain,
  seededRandom, sleep, summarize, waitFor, waitForSynced, Y
} from '../interop/lib.mjs'

const SYNC_TIMEOUT_MS = 10000
const CONVERGE_TIMEOUT_MS = 30000

// Each document gets its own tag, so content that leaks from one document
// into the other can be recognised.
const editClient = async ({ doc, name, tag }, edits, random) => {
  const text = doc.getText('text')
  const map = doc.getMap('map')
  const array = doc.getArray('array')
  for (let i = 0; i < edits; i++) {
    const choice = random()
    doc.transact(() => {
      if (choice < 0.4) {
        if (text.length > 0 && random() < 0.3) {
          const index = Math.floor(random() * text.length)
          text.delete(index, Math.min(3, text.length - index))
        } else {
          text.insert(Math.floor(random() * (text.length + 1)), `<${tag}:${name}:${i}>`)
        }
      } else if (choice < 0.7) {
        const key = `${tag}-key-${Math.floor(random() * 20)}`
        if (random() < 0.2) map.delete(key)
        else map.set(key, { tag, by: name, edit: i })
      } else {
        if (array.length > 0 && random() < 0.25) {
          array.delete(Math.floor(random() * array.length), 1)
        } else {
          array.insert(Math.floor(random() * (array.length + 1)), [`${tag}:${name}:${i}`])
        }
      }
    })
    // Pauses at random points let updates from different relays cross on
    // the wire instead of arriving in order.
    if (random() < 0.3) await sleep(Math.floor(random() * 6))
    else await new Promise((resolve) => setImmediate(resolve))
  }
}

const connectGroup = async (relayUrls, docName, clientsPerRelay, tag) => {
  const clients = []
  relayUrls.forEach((url, relayIndex) => {
    for (let i = 0; i < clientsPerRelay; i++) {
      const doc = new Y.Doc()
      const name = `r${relayIndex}c${i}`
      clients.push({ name, relayIndex, tag, doc, provider: createProvider(url, docName, doc) })
    }
  })
  await Promise.all(clients.map(({ provider }) => waitForSynced(provider, SYNC_TIMEOUT_MS)))
  return clients
}

const waitConverged = (clients, docName) => waitFor(() => allEqual(clients.map((c) => c.doc)), {
  timeoutMs: CONVERGE_TIMEOUT_MS,
  what: `the clients of "${docName}" on every relay to converge`,
  intervalMs: 50,
  describe: () => clients.map((c) => `${c.name}: sv=${summarize(c.doc).stateVector}`).join(', ')
})

const main = async () => {
  const args = parseArgs(['relayUrls', 'firstDoc', 'secondDoc', 'clientsPerRelay', 'editsPerClient', 'seed'])
  const relayUrls = args.relayUrls.split(',')
  const clientsPerRelay = Number(args.clientsPerRelay)
  const edits = Number(args.editsPerClient)
  const random = seededRandom(Number(args.seed))

  const first = await connectGroup(relayUrls, args.firstDoc, clientsPerRelay, 'first')
  const second = await connectGroup(relayUrls, args.secondDoc, clientsPerRelay, 'second')
  log(`${first.length + second.length} editors synced on ${relayUrls.length} relays`)

  const started = performance.now()
  // Each client gets its own random stream, derived from the seed.
  await Promise.all([...first, ...second].map((client) => {
    return editClient(client, edits, seededRandom(Math.floor(random() * 2 ** 32)))
  }))
  const editMs = performance.now() - started
  log(`edits done in ${editMs.toFixed(0)} ms`)

  await waitConverged(first, args.firstDoc)
  await waitConverged(second, args.secondDoc)
  const convergeMs = performance.now() - started
  log(`converged ${convergeMs.toFixed(0)} ms after the edits started`)

  const fresh = async (docName) => {
    const captured = []
    for (const url of relayUrls) {
      const { provider, syncMs, atSynced } = await connectAndCapture(url, docName, SYNC_TIMEOUT_MS)
      provider.destroy()
      captured.push({ url, syncMs, ...atSynced })
    }
    return captured
  }
  const report = async (clients, docName) => ({
    editorClientIds: clients.map((c) => c.doc.clientID),
    stateVectorClientIds: clientIds(clients[0].doc),
    clients: clients.map((c) => ({ name: c.name, relayIndex: c.relayIndex, ...summarize(c.doc) })),
    fresh: await fresh(docName)
  })
  const result = {
    editMs,
    convergeMs,
    first: await report(first, args.firstDoc),
    second: await report(second, args.secondDoc)
  }
  for (const client of [...first, ...second]) client.provider.destroy()
  return result
}

runMain(main, { limitMs: 120000 })
