// Three providers edit Y.Text, Y.Map and Y.Array of one document at the same
// time while two providers edit a second document. Then a late client joins
// each document. Prints every client's state vector and content.
//
// usage: node converge.mjs <serverUrl> <firstDoc> <secondDoc> <editsPerClient> <seed>

import {
  allEqual, clientIds, connectAndCapture, createProvider, log, parseArgs, runMain,
  seededRandom, sleep, summarize, waitFor, waitForSynced, Y
} from './lib.mjs'

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
    // Yield to the event loop at random points, so that the clients' updates
    // cross each other on the wire instead of arriving in order.
    if (random() < 0.3) await sleep(Math.floor(random() * 4))
    else await new Promise((resolve) => setImmediate(resolve))
  }
}

const connectGroup = async (serverUrl, docName, names, tag) => {
  const clients = names.map((name) => {
    const doc = new Y.Doc()
    return { name, tag, doc, provider: createProvider(serverUrl, docName, doc) }
  })
  await Promise.all(clients.map(({ provider }) => waitForSynced(provider, SYNC_TIMEOUT_MS)))
  return clients
}

const waitConverged = (clients, docName) => waitFor(() => allEqual(clients.map((c) => c.doc)), {
  timeoutMs: CONVERGE_TIMEOUT_MS,
  what: `the clients of "${docName}" to converge`,
  intervalMs: 50,
  describe: () => clients.map((c) => `${c.name}: sv=${summarize(c.doc).stateVector}`).join(', ')
})

const main = async () => {
  const args = parseArgs(['serverUrl', 'firstDoc', 'secondDoc', 'editsPerClient', 'seed'])
  const edits = Number(args.editsPerClient)
  const random = seededRandom(Number(args.seed))

  const first = await connectGroup(args.serverUrl, args.firstDoc, ['a1', 'a2', 'a3'], 'first')
  const second = await connectGroup(args.serverUrl, args.secondDoc, ['b1', 'b2'], 'second')
  log('all editors synced')

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

  const lateFirst = await connectAndCapture(args.serverUrl, args.firstDoc, SYNC_TIMEOUT_MS)
  const lateSecond = await connectAndCapture(args.serverUrl, args.secondDoc, SYNC_TIMEOUT_MS)

  const report = (clients, late) => ({
    editorClientIds: clients.map((c) => c.doc.clientID),
    stateVectorClientIds: clientIds(clients[0].doc),
    clients: clients.map((c) => ({ name: c.name, ...summarize(c.doc) })),
    late: { syncMs: late.syncMs, ...late.atSynced }
  })
  const result = {
    editMs,
    convergeMs,
    first: report(first, lateFirst),
    second: report(second, lateSecond)
  }
  for (const client of [...first, ...second]) client.provider.destroy()
  lateFirst.provider.destroy()
  lateSecond.provider.destroy()
  return result
}

runMain(main, { limitMs: 120000 })
