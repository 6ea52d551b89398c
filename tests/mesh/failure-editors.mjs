// Yjs clients for the mesh failure tests, driven by JSON commands on stdin.
//
// The Python test sends one JSON object per line and waits for the matching
// reply line {"event": "done", "step": <cmd>, ...} on stdout. Every reply uses
// the event name "done", so a driver that waits for one step never discards
// the reply to another. Commands:
//
//   {"cmd": "connect", "name", "url", "doc"}   new Y.Doc and provider; reply once synced
//   {"cmd": "edit", "names", "edits", "intervalMs", "seed"}
//       each named client makes `edits` random edits with `intervalMs` ms
//       between them, whether or not its provider is connected; reply when
//       all are done
//   {"cmd": "move", "name", "url"}   destroy the provider and create one for
//       `url` with the same Y.Doc; reply once synced
//   {"cmd": "probe", "id", "writer", "reader"}   the writer sets key `id` of
//       Y.Map "probes", and the reply reports how many ms passed until the
//       reader contained it
//   {"cmd": "converge", "names", "timeoutMs"}   wait until the named clients
//       have equal state vectors and content; reply with each client's state
//   {"cmd": "fresh", "url", "doc"}   a new client syncs `doc` (by default the
//       first client's document) from `url`; reply with what it held when it
//       reported synced
//
// A command that fails replies with an "error" field instead.
//
// A client's state in a reply has the summary of lib.mjs plus "update", the
// whole document as a base64 Yjs update. When stdin closes the script
// destroys every provider and prints the final states as its result.
//
// usage: node failure-editors.mjs

import readline from 'node:readline'

import {
  allEqual, connectAndCapture, createProvider, emitEvent, log, runMain, seededRandom,
  sleep, summarize, waitFor, waitForSynced, Y
} from '../interop/lib.mjs'

const SYNC_TIMEOUT_MS = 15000
const PROBE_TIMEOUT_MS = 5000

const clients = new Map()

const clientNamed = (name) => {
  const client = clients.get(name)
  if (client === undefined) throw new Error(`no client named "${name}". Connect it first`)
  return client
}

const fullState = (name, doc) => ({
  name,
  ...summarize(doc),
  update: Buffer.from(Y.encodeStateAsUpdate(doc)).toString('base64')
})

// Every insertion carries a token unique to the client and edit, so a lost
// or duplicated edit shows in the text. Map keys are shared by all clients,
// so concurrent writes to one key from both relays happen.
const editOnce = (client, index, random) => {
  const { doc, name } = client
  const text = doc.getText('text')
  const map = doc.getMap('map')
  const array = doc.getArray('array')
  const choice = random()
  doc.transact(() => {
    if (choice < 0.5) {
      text.insert(Math.floor(random() * (text.length + 1)), `<${name}:${index}>`)
    } else if (choice < 0.6) {
      if (text.length > 0) {
        const position = Math.floor(random() * text.length)
        text.delete(position, Math.min(3, text.length - position))
      }
    } else if (choice < 0.85) {
      map.set(`key-${Math.floor(random() * 12)}`, { by: name, edit: index })
    } else if (array.length > 0 && random() < 0.2) {
      array.delete(Math.floor(random() * array.length), 1)
    } else {
      array.insert(Math.floor(random() * (array.length + 1)), [`${name}:${index}`])
    }
  })
}

const editLoop = async (client, edits, intervalMs, random) => {
  for (let i = 0; i < edits; i++) {
    editOnce(client, i, random)
    await sleep(intervalMs)
  }
}

const commands = {
  async connect ({ name, url, doc: docName }) {
    if (clients.has(name)) throw new Error(`client "${name}" exists already`)
    const doc = new Y.Doc()
    const provider = createProvider(url, docName, doc)
    const client = { name, doc, docName, provider }
    clients.set(name, client)
    await waitForSynced(provider, SYNC_TIMEOUT_MS)
    return { name, clientID: doc.clientID }
  },

  async edit ({ names, edits, intervalMs, seed }) {
    const random = seededRandom(seed)
    const started = performance.now()
    await Promise.all(names.map((name) => {
      return editLoop(clientNamed(name), edits, intervalMs, seededRandom(Math.floor(random() * 2 ** 32)))
    }))
    return { names, edits, ms: performance.now() - started }
  },

  async move ({ name, url }) {
    const client = clientNamed(name)
    const started = performance.now()
    client.provider.destroy()
    client.provider = createProvider(url, client.docName, client.doc)
    await waitForSynced(client.provider, SYNC_TIMEOUT_MS)
    return { name, url, ms: performance.now() - started }
  },

  async probe ({ id, writer, reader }) {
    const from = clientNamed(writer)
    const to = clientNamed(reader)
    const started = performance.now()
    from.doc.getMap('probes').set(id, writer)
    try {
      await waitFor(() => to.doc.getMap('probes').get(id) === writer, {
        timeoutMs: PROBE_TIMEOUT_MS,
        what: `probe ${id} from ${writer} to reach ${reader}`,
        intervalMs: 5,
        docs: [to.doc]
      })
    } catch (error) {
      log(error.message)
      return { id, writer, reader, seen: false, ms: null }
    }
    return { id, writer, reader, seen: true, ms: performance.now() - started }
  },

  async converge ({ names, timeoutMs }) {
    const docs = names.map((name) => clientNamed(name).doc)
    const started = performance.now()
    let converged = true
    try {
      await waitFor(() => allEqual(docs), {
        timeoutMs,
        what: `clients ${names.join(', ')} to converge`,
        intervalMs: 50
      })
    } catch (error) {
      log(error.message)
      converged = false
    }
    return {
      converged,
      ms: performance.now() - started,
      clients: names.map((name) => fullState(name, clientNamed(name).doc))
    }
  },

  async fresh ({ url, doc }) {
    const docName = doc ?? clients.values().next().value.docName
    const capture = (freshDoc) => fullState('fresh', freshDoc)
    const { provider, syncMs, atSynced } = await connectAndCapture(url, docName, SYNC_TIMEOUT_MS, capture)
    provider.destroy()
    return { syncMs, client: atSynced }
  }
}

const main = async () => {
  const input = readline.createInterface({ input: process.stdin })
  const running = []
  for await (const line of input) {
    if (!line.trim()) continue
    const command = JSON.parse(line)
    const handler = commands[command.cmd]
    if (handler === undefined) throw new Error(`unknown command "${command.cmd}" in line ${line}`)
    log(`command ${line}`)
    // Commands run concurrently: a move happens while edits go on.
    running.push(handler(command).then(
      (reply) => emitEvent('done', { step: command.cmd, ...reply }),
      (error) => {
        log(`command ${command.cmd} failed: ${error && error.stack ? error.stack : error}`)
        emitEvent('done', { step: command.cmd, error: String(error && error.message ? error.message : error) })
      }
    ))
  }
  await Promise.all(running)
  const final = Array.from(clients.values()).map((client) => fullState(client.name, client.doc))
  for (const client of clients.values()) client.provider.destroy()
  return { clients: final }
}

runMain(main, { limitMs: 240000 })
