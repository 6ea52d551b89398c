// Two clients behind a load balancer: A on relay S1 and B on relay S2 make
// random inserts and deletes in the Y.Text "text" of one document at a fixed
// rate. Halfway through, A's socket is dropped and A reconnects to S2 with
// the same Y.Doc and a new provider. Meanwhile D edits a second document on
// S1, where observer O shows what S1 has applied. The Python driver opens
// that document cold on S2 when this script announces "cold-open".
// After two seconds of quiet a fresh client connects to each relay for
// each document, and the script prints what every client holds.
//
// usage: node mesh-handoff.mjs <s1Url> <s2Url> <editDoc> <coldDoc> <editsPerClient> <ratePerSecond> <seed>
//
// Events: "ready" when every client synced; "cold-open" with O's state
// vector when the driver should open <coldDoc> on S2; "edits-done" after
// the last edit of every client.

import {
  connectAndCapture, createProvider, emitEvent, log, parseArgs, runMain, seededRandom, sleep,
  stateVectorBase64, waitFor, waitForSynced, Y
} from '../interop/lib.mjs'

const SYNC_TIMEOUT_MS = 10000
const CONVERGE_TIMEOUT_MS = 30000
const QUIET_MS = 2000
// A reconnects this long after its socket was dropped.
const RECONNECT_DELAY_MS = 20
// Share of D's edits made before the cold open, so S1 has edits then and
// D keeps editing while S2 loads the document.
const COLD_OPEN_AT = 0.3

const describe = (doc) => ({ stateVector: stateVectorBase64(doc), text: doc.getText('text').toString() })

const editOnce = (doc, name, index, random) => {
  const text = doc.getText('text')
  if (text.length > 0 && random() < 0.35) {
    const position = Math.floor(random() * text.length)
    text.delete(position, Math.min(1 + Math.floor(random() * 3), text.length - position))
  } else {
    text.insert(Math.floor(random() * (text.length + 1)), `${name}${index};`)
  }
}

// Edit on a fixed schedule, so the rate stays even when one edit is late.
// `beforeEdit(index)` runs before each edit.
const editAtRate = async (client, edits, intervalMs, random, beforeEdit = () => {}) => {
  const started = performance.now()
  for (let index = 0; index < edits; index++) {
    beforeEdit(index)
    editOnce(client.doc, client.name, index, random)
    client.transactions++
    const delay = started + (index + 1) * intervalMs - performance.now()
    if (delay > 0) await sleep(delay)
  }
}

const connect = (name, url, docName) => {
  const doc = new Y.Doc()
  return { name, doc, provider: createProvider(url, docName, doc), transactions: 0 }
}

const main = async () => {
  const args = parseArgs(['s1Url', 's2Url', 'editDoc', 'coldDoc', 'editsPerClient', 'ratePerSecond', 'seed'])
  const edits = Number(args.editsPerClient)
  const intervalMs = 1000 / Number(args.ratePerSecond)
  const random = seededRandom(Number(args.seed))

  const a = connect('A', args.s1Url, args.editDoc)
  const b = connect('B', args.s2Url, args.editDoc)
  const d = connect('D', args.s1Url, args.coldDoc)
  const observer = connect('O', args.s1Url, args.coldDoc)
  const clients = [a, b, d, observer]
  await Promise.all(clients.map(({ provider }) => waitForSynced(provider, SYNC_TIMEOUT_MS)))
  emitEvent('ready')

  const handoff = { droppedAt: null, connectedAfterMs: null }
  const dropAndMove = () => {
    const old = a.provider
    handoff.droppedAt = performance.now()
    // terminate() ends the TCP connection without a close frame, and destroy()
    // then keeps the old provider from reconnecting to S1.
    old.ws.terminate()
    old.destroy()
    setTimeout(() => {
      a.provider = createProvider(args.s2Url, args.editDoc, a.doc)
      a.provider.on('status', ({ status }) => {
        if (status === 'connected' && handoff.connectedAfterMs === null) {
          handoff.connectedAfterMs = performance.now() - handoff.droppedAt
        }
      })
    }, RECONNECT_DELAY_MS)
    log('A dropped from S1, reconnecting to S2')
  }
  const coldOpenIndex = Math.floor(edits * COLD_OPEN_AT)
  const announceColdOpen = () => {
    emitEvent('cold-open', { observerStateVector: stateVectorBase64(observer.doc) })
    log('announced the cold open')
  }

  const seeds = [a, b, d].map(() => Math.floor(random() * 2 ** 32))
  const started = performance.now()
  await Promise.all([
    editAtRate(a, edits, intervalMs, seededRandom(seeds[0]), (index) => { if (index === Math.floor(edits / 2)) dropAndMove() }),
    editAtRate(b, edits, intervalMs, seededRandom(seeds[1])),
    editAtRate(d, edits, intervalMs, seededRandom(seeds[2]), (index) => { if (index === coldOpenIndex) announceColdOpen() })
  ])
  const editMs = performance.now() - started
  const quietFrom = performance.now()
  emitEvent('edits-done', { editMs })
  log(`edits done in ${editMs.toFixed(0)} ms`)

  await waitForSynced(a.provider, SYNC_TIMEOUT_MS)
  const same = (first, second) => stateVectorBase64(first.doc) === stateVectorBase64(second.doc) &&
    first.doc.getText('text').toString() === second.doc.getText('text').toString()
  await waitFor(() => same(a, b) && same(d, observer), {
    timeoutMs: CONVERGE_TIMEOUT_MS,
    what: 'A and B, and D and O, to converge',
    intervalMs: 50,
    describe: () => clients.map((c) => `${c.name}: sv=${stateVectorBase64(c.doc)}`).join(', ')
  })
  const convergedAfterMs = performance.now() - quietFrom
  await sleep(Math.max(0, quietFrom + QUIET_MS - performance.now()))

  const fresh = {}
  for (const [docName, key] of [[args.editDoc, 'editDoc'], [args.coldDoc, 'coldDoc']]) {
    fresh[key] = []
    for (const url of [args.s1Url, args.s2Url]) {
      const captured = await connectAndCapture(url, docName, SYNC_TIMEOUT_MS, describe)
      captured.provider.destroy()
      fresh[key].push({ url, ...captured.atSynced })
    }
  }

  const result = {
    editMs,
    convergedAfterMs,
    handoff: { connectedAfterMs: handoff.connectedAfterMs },
    transactions: Object.fromEntries([a, b, d].map((c) => [c.name, c.transactions])),
    clients: Object.fromEntries(clients.map((c) => [c.name, { clientID: c.doc.clientID, ...describe(c.doc) }])),
    fresh
  }
  for (const client of clients) client.provider.destroy()
  return result
}

runMain(main, { limitMs: 120000 })
