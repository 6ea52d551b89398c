// Helpers shared by the scenario scripts: connecting y-websocket providers,
// waiting with bounded timeouts, summarising documents and printing results.
//
// Output convention: a script prints JSON lines to stdout. Lines with an
// "event" key announce a step to the Python driver, and the last line is the
// result. Progress messages go to stderr.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

export { Y, WebsocketProvider }

/** Write a progress message to stderr with the time since start-up. */
export const log = (...parts) => {
  const seconds = (performance.now() / 1000).toFixed(3)
  process.stderr.write(`[${seconds}s] ${parts.join(' ')}\n`)
}

/** Print one JSON line to stdout. */
export const emit = (value) => {
  process.stdout.write(JSON.stringify(value) + '\n')
}

/** Print an event line that the Python driver can wait for. */
export const emitEvent = (name, fields = {}) => emit({ event: name, ...fields })

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// Every provider adds a process 'exit' listener, and the crowd scenario
// creates a hundred providers in one process.
process.setMaxListeners(1000)

// Writes to a pipe can complete asynchronously once the pipe buffer is full,
// so exit only after stdout and stderr have flushed.
const exitAfterFlush = (code) => {
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)))
}

/**
 * Run `main`, print its return value as the last stdout line and exit.
 *
 * The process exits with code 1 and the stack on stderr when `main` throws,
 * and with code 2 when it runs longer than `limitMs`, so a hung script always
 * stops by itself. Exiting also ends open sockets and timers.
 */
export const runMain = (main, { limitMs }) => {
  const watchdog = setTimeout(() => {
    log(`timed out: the script ran longer than its limit of ${limitMs} ms`)
    exitAfterFlush(2)
  }, limitMs)
  main().then((result) => {
    clearTimeout(watchdog)
    emit(result)
    exitAfterFlush(0)
  }, (error) => {
    clearTimeout(watchdog)
    log(`failed: ${error && error.stack ? error.stack : error}`)
    exitAfterFlush(1)
  })
}

/**
 * Read positional command-line arguments by name.
 *
 * `names` lists the expected arguments in order. A name ending in `?` is
 * optional and is `undefined` when missing.
 */
export const parseArgs = (names) => {
  const values = process.argv.slice(2)
  const args = {}
  names.forEach((name, index) => {
    const optional = name.endsWith('?')
    const key = optional ? name.slice(0, -1) : name
    if (index >= values.length && !optional) {
      throw new Error(`missing argument <${key}>; usage: node ${process.argv[1]} ${names.map((n) => `<${n}>`).join(' ')}`)
    }
    args[key] = values[index]
  })
  return args
}

/**
 * Create a y-websocket provider that talks to `serverUrl` only.
 *
 * BroadcastChannel is disabled because Node has a global BroadcastChannel:
 * providers in one process would otherwise exchange updates directly and
 * hide what the server does.
 */
export const createProvider = (serverUrl, docName, doc = new Y.Doc(), options = {}) => {
  return new WebsocketProvider(serverUrl, docName, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    maxBackoffTime: 1000,
    ...options
  })
}

/**
 * Wait until `predicate()` returns a truthy value and return that value.
 *
 * Checks every `intervalMs` and also whenever one of `docs` changes. Throws
 * an error naming `what` after `timeoutMs`, with `describe()` appended.
 */
export const waitFor = (predicate, { timeoutMs, what, intervalMs = 20, docs = [], describe = () => '' }) => {
  return new Promise((resolve, reject) => {
    let done = false
    const finish = (error, value) => {
      if (done) return
      done = true
      clearInterval(interval)
      clearTimeout(timer)
      docs.forEach((doc) => doc.off('update', check))
      if (error) reject(error)
      else resolve(value)
    }
    const check = () => {
      if (done) return
      let value
      try {
        value = predicate()
      } catch (error) {
        finish(error)
        return
      }
      if (value) finish(null, value)
    }
    const interval = setInterval(check, intervalMs)
    const timer = setTimeout(() => {
      const details = describe()
      finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${details ? ': ' + details : ''}`))
    }, timeoutMs)
    docs.forEach((doc) => doc.on('update', check))
    check()
  })
}

/** Wait until `provider` reports synced; throw after `timeoutMs`. */
export const waitForSynced = (provider, timeoutMs) => waitFor(() => provider.synced, {
  timeoutMs,
  what: `provider of "${provider.roomname}" to report synced`,
  describe: () => `wsconnected=${provider.wsconnected} wsconnecting=${provider.wsconnecting}`
})

/**
 * Create a provider and resolve with a summary of its document taken inside
 * the first 'synced' handler, before any later message is processed.
 */
export const connectAndCapture = (serverUrl, docName, timeoutMs, capture = summarize) => {
  const doc = new Y.Doc()
  const started = performance.now()
  const provider = createProvider(serverUrl, docName, doc, { connect: false })
  const closeCodes = recordCloseCodes(provider)
  let connectionErrors = 0
  provider.on('connection-error', () => { connectionErrors++ })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(
        `fresh client of "${docName}" did not report synced within ${timeoutMs} ms ` +
        `(wsconnected=${provider.wsconnected}, connection errors: ${connectionErrors}, close codes: [${closeCodes}])`
      ))
    }, timeoutMs)
    provider.on('synced', (synced) => {
      if (!synced) return
      clearTimeout(timer)
      const syncMs = performance.now() - started
      resolve({ provider, doc, syncMs, atSynced: capture(doc) })
    })
    provider.connect()
  })
}

/** Return the state vector of `doc` as base64. */
export const stateVectorBase64 = (doc) => Buffer.from(Y.encodeStateVector(doc)).toString('base64')

/** Return the client ids that appear in the state vector of `doc`. */
export const clientIds = (doc) => Array.from(Y.decodeStateVector(Y.encodeStateVector(doc)).keys())

/**
 * Summarise the shared types the scenarios use: Y.Text "text", Y.Map "map"
 * and Y.Array "array", plus the state vector.
 */
export const summarize = (doc) => ({
  stateVector: stateVectorBase64(doc),
  text: doc.getText('text').toString(),
  map: doc.getMap('map').toJSON(),
  array: doc.getArray('array').toJSON()
})

/**
 * Serialise `value` as JSON with object keys sorted. Y.Map.toJSON lists keys
 * in the order each replica set them, which differs between replicas.
 */
export const canonicalJson = (value) => JSON.stringify(value, (_key, item) => {
  if (item === null || typeof item !== 'object' || Array.isArray(item)) return item
  return Object.fromEntries(Object.keys(item).sort().map((key) => [key, item[key]]))
})

/** Return true when all documents have the same state vector and content. */
export const allEqual = (docs) => {
  const first = canonicalJson(summarize(docs[0]))
  return docs.every((doc) => canonicalJson(summarize(doc)) === first)
}

/** Deterministic pseudo-random numbers in [0, 1) (mulberry32). */
export const seededRandom = (seed) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Record the close codes the server sends to `provider`. */
export const recordCloseCodes = (provider) => {
  const codes = []
  provider.on('connection-close', (event) => {
    if (event) codes.push(event.code)
  })
  return codes
}
