// Load generator of bench/versus_node.py: y-protocols clients that drive one
// y-websocket server (yrelay or the Node reference server) through one
// scenario and print the result as one JSON line.
//
// Each client is a Y.Doc behind a raw `ws` socket that speaks the y-websocket
// wire protocol with the y-protocols encoders: sync step 1 and 2, updates and
// awareness. No provider library sits in between, so nothing reconnects,
// batches or throttles behind the benchmark's back.
//
// The clients that measure latency take the arrival time of every message
// when the socket delivers it and apply the message to their Y.Doc only
// after the measured window. All clients share this process and one core,
// so applying 200 copies of an update on arrival would queue the later
// arrivals behind the earlier ones' Yjs work and add that wait to their
// latency.
//
// Every scenario ends by checking that each client converged: its document
// must equal the writer's (state vector and text), and it must have received
// every edit. A client that did not converge makes the result "ok": false
// with the reason, and the caller reports the run as failed.
//
//   node loadgen.mjs --scenario fanout --url ws://127.0.0.1:1234 \
//     --server-pid 4242 --clk-tck 100 [--seconds 20] [--limit-seconds 300]
//
// The server PID is used only to read /proc/<pid>/stat and /proc/<pid>/status
// (CPU time and memory of the server).

import { readFileSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as syncProtocol from 'y-protocols/sync'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'

const MESSAGE_SYNC = 0
const MESSAGE_AWARENESS = 1
const CONNECT_TIMEOUT_MS = 60000
// Bounds the number of handshakes in flight, because a listen backlog
// (Hypercorn's default is 100) overflowing turns into 1 s SYN retries.
const CONNECT_CONCURRENCY = 50

// --- measurement helpers --------------------------------------------------------

const now = () => performance.now()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))

/** Write a progress message to stderr. */
const log = (...parts) => {
  process.stderr.write(`[loadgen ${(now() / 1000).toFixed(3)}s] ${parts.join(' ')}\n`)
}

/** Return the value below which `fraction` of `values` fall (nearest rank). */
const percentile = (values, fraction) => {
  if (values.length === 0) return null
  const ordered = Float64Array.from(values).sort()
  const index = Math.min(ordered.length - 1, Math.max(0, Math.round(fraction * ordered.length) - 1))
  return ordered[index]
}

/** Poll `predicate` every `intervalMs` until it returns true or `timeoutMs` passes; return whether it did. */
const waitUntil = async (predicate, timeoutMs, intervalMs = 10) => {
  const deadline = now() + timeoutMs
  while (!predicate()) {
    if (now() >= deadline) return false
    await sleep(intervalMs)
  }
  return true
}

/**
 * Read the CPU time (user + system, in clock ticks) of process `pid`.
 *
 * Fields 14 and 15 of /proc/<pid>/stat; the command name in field 2 may
 * contain spaces, so counting starts after its closing parenthesis.
 */
const readCpuTicks = (pid) => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(fields[11]) + Number(fields[12])
}

/** Read one "Vm..." line of /proc/<pid>/status, in KiB. */
const readStatusKiB = (pid, key) => {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const line = status.split('\n').find((entry) => entry.startsWith(`${key}:`))
  if (line === undefined) throw new Error(`${key} not found in /proc/${pid}/status`)
  return Number(line.split(/\s+/)[1])
}

/** CPU time of the server and of this process over one measured window. */
class CpuWindow {
  constructor (pid, clockTicks) {
    this.pid = pid
    this.clockTicks = clockTicks
  }

  start () {
    this.startedAt = now()
    this.startTicks = readCpuTicks(this.pid)
    this.startOwn = process.cpuUsage()
  }

  /** Return server CPU seconds and percent of one core, and this process's percent. */
  stop () {
    const seconds = (now() - this.startedAt) / 1000
    const serverSeconds = (readCpuTicks(this.pid) - this.startTicks) / this.clockTicks
    const own = process.cpuUsage(this.startOwn)
    return {
      window_seconds: seconds,
      server_cpu_seconds: serverSeconds,
      server_cpu_percent: (100 * serverSeconds) / seconds,
      loadgen_cpu_percent: (100 * (own.user + own.system) / 1e6) / seconds
    }
  }
}

// --- y-protocols client -------------------------------------------------------------

const encodeMessage = (type, write) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, type)
  write(encoder)
  return encoding.toUint8Array(encoder)
}

/**
 * Distinct contents of storm messages, each stored once.
 *
 * Two hundred joiners receive the same multi-megabyte sync reply, and one
 * copy is enough to check it. Contents are compared with Buffer.equals
 * (memcmp), because hashing a gigabyte of replies would keep this process
 * busy long enough to delay reading the sockets it measures.
 */
const sharedContent = []

/** Return the index of `bytes` in `sharedContent`, adding it when new. */
const internContent = (bytes) => {
  const index = sharedContent.findIndex((known) => known.length === bytes.length && known.equals(bytes))
  if (index >= 0) return index
  sharedContent.push(bytes)
  return sharedContent.length - 1
}

/**
 * One y-websocket client: a Y.Doc synchronised through a raw socket.
 *
 * `updates` selects what happens to sync updates that arrive after the
 * handshake: 'apply' applies them at once, 'record' keeps [arrival ms,
 * bytes] in `received` for later, 'count' only counts them, and 'storm'
 * also records the step 2 itself, as an index into `sharedContent`.
 * `recordAwareness` keeps awareness messages the same way in
 * `awarenessReceived`. `onUpdate(at)` is called for every sync update after
 * the handshake, and `onAwareness(bytes)` for every awareness message.
 */
class Client {
  constructor (url, room, { updates = 'apply', recordAwareness = false, onUpdate = null, onAwareness = null } = {}) {
    this.url = `${url}/${room}`
    this.room = room
    this.mode = updates
    this.recordAwareness = recordAwareness
    this.onUpdate = onUpdate
    this.onAwareness = onAwareness
    this.doc = new Y.Doc()
    this.synced = false
    this.syncedAt = null
    this.updateCount = 0
    this.received = []
    this.awarenessReceived = []
    this.stormMessages = []
    this.closeCode = null
    this.ws = null
  }

  /** Connect and resolve once the server's sync step 2 has arrived. */
  open (timeoutMs = CONNECT_TIMEOUT_MS) {
    this.openedAt = now()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.url}: not synced within ${timeoutMs} ms`)), timeoutMs)
      this._resolveSynced = () => {
        clearTimeout(timer)
        resolve(this)
      }
      const ws = new WebSocket(this.url, { perMessageDeflate: false })
      this.ws = ws
      ws.binaryType = 'nodebuffer'
      ws.on('open', () => {
        ws.send(encodeMessage(MESSAGE_SYNC, (encoder) => syncProtocol.writeSyncStep1(encoder, this.doc)))
      })
      ws.on('message', (data) => this._onMessage(data))
      ws.on('error', (error) => {
        clearTimeout(timer)
        reject(new Error(`${this.url}: ${error.message}`))
      })
      ws.on('close', (code) => {
        this.closeCode = code
        if (!this.synced) {
          clearTimeout(timer)
          reject(new Error(`${this.url}: closed with code ${code} before sync`))
        }
      })
    })
  }

  get isOpen () {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN
  }

  send (bytes) {
    this.ws.send(bytes)
  }

  _onMessage (bytes) {
    const at = now()
    const type = bytes[0]
    if (type === MESSAGE_SYNC) {
      this._onSync(bytes, at)
    } else if (type === MESSAGE_AWARENESS) {
      if (this.recordAwareness) this.awarenessReceived.push([at, bytes])
      if (this.onAwareness !== null) this.onAwareness(bytes)
    }
  }

  _onSync (bytes, at) {
    const kind = bytes[1]
    if (this.mode === 'storm' && kind !== syncProtocol.messageYjsSyncStep1) {
      this._recordStormMessage(bytes, at)
      if (kind === syncProtocol.messageYjsSyncStep2) this._markSynced(at)
      return
    }
    if (this.synced && kind === syncProtocol.messageYjsUpdate && this.mode !== 'apply') {
      this.updateCount += 1
      if (this.mode === 'record') this.received.push([at, bytes])
      if (this.onUpdate !== null) this.onUpdate(at)
      return
    }
    applySyncMessage(this, bytes)
    if (kind === syncProtocol.messageYjsSyncStep2) this._markSynced(at)
    else if (kind === syncProtocol.messageYjsUpdate && this.synced) {
      this.updateCount += 1
      if (this.onUpdate !== null) this.onUpdate(at)
    }
  }

  _markSynced (at) {
    if (this.synced) return
    this.synced = true
    this.syncedAt = at
    this._resolveSynced()
  }

  _recordStormMessage (bytes, at) {
    this.stormMessages.push([at, internContent(bytes)])
  }

  /** Apply the recorded updates in arrival order, calling `after(at)` after each. */
  replayRecorded (after = () => {}) {
    for (const [at, bytes] of this.received) {
      applySyncMessage(this, bytes)
      after(at)
    }
  }

  close () {
    if (this.ws !== null) this.ws.terminate()
  }
}

/**
 * Apply one sync message to `client.doc` with y-protocols and send the reply
 * it produces (a step 2 in reply to the server's step 1).
 */
const applySyncMessage = (client, bytes) => {
  const decoder = decoding.createDecoder(bytes)
  decoding.readVarUint(decoder)
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, MESSAGE_SYNC)
  syncProtocol.readSyncMessage(decoder, encoder, client.doc, client)
  if (encoding.length(encoder) > 1 && client.isOpen) client.send(encoding.toUint8Array(encoder))
}

/**
 * A client that edits: every `edit(seq)` appends "<seq>;" to the text "t"
 * and stores [seq, send time] under "s" in the map "m", in one transaction,
 * which sends one update.
 */
class Writer extends Client {
  constructor (url, room, options = {}) {
    // Only the writer edits in these scenarios, so the updates it receives
    // are its own (the Node server echoes them) and carry nothing new.
    super(url, room, { updates: 'count', ...options })
    this.text = this.doc.getText('t')
    this.stamps = this.doc.getMap('m')
    this.doc.on('update', (update, origin) => {
      if (origin === this) return
      this.send(encodeMessage(MESSAGE_SYNC, (encoder) => syncProtocol.writeUpdate(encoder, update)))
    })
  }

  edit (seq) {
    this.doc.transact(() => {
      this.text.insert(this.text.length, `${seq};`)
      this.stamps.set('s', [seq, now()])
    })
  }
}

/** Connect every client, at most CONNECT_CONCURRENCY handshakes at a time. */
const connectAll = async (clients) => {
  let next = 0
  const worker = async () => {
    while (next < clients.length) {
      const client = clients[next]
      next += 1
      await client.open()
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONNECT_CONCURRENCY, clients.length) }, worker))
}

const closeAll = (clients) => clients.forEach((client) => client.close())

const docsEqual = (a, b) => Buffer.compare(Buffer.from(Y.encodeStateVector(a)), Buffer.from(Y.encodeStateVector(b))) === 0 &&
  a.getText('t').toString() === b.getText('t').toString()

/**
 * Replay each subscriber's recorded updates and return the delivery
 * latencies (ms) with a list of convergence failures.
 *
 * A subscriber fails when it missed an edit of its writer (`expected` edits
 * were sent) or when its document differs from the writer's.
 */
const collectLatencies = (writer, subscribers, expected) => {
  const latencies = []
  const failures = []
  subscribers.forEach((subscriber, index) => {
    const stamps = subscriber.doc.getMap('m')
    const seen = new Set()
    subscriber.replayRecorded((at) => {
      const stamp = stamps.get('s')
      if (stamp !== undefined && !seen.has(stamp[0])) {
        seen.add(stamp[0])
        latencies.push(at - stamp[1])
      }
    })
    if (seen.size !== expected) {
      failures.push(`subscriber ${index} of ${writer.room} received ${seen.size} of ${expected} edits`)
    } else if (!docsEqual(subscriber.doc, writer.doc)) {
      failures.push(`subscriber ${index} of ${writer.room} has a document that differs from the writer's`)
    }
    subscriber.received = []
  })
  return { latencies, failures }
}

/** Send `count` edits from `writer` at `rate` per second, starting `offsetMs` from now. */
const writeAtRate = async (writer, count, rate, offsetMs = 0) => {
  const interval = 1000 / rate
  const start = now() + offsetMs
  for (let seq = 0; seq < count; seq++) {
    await sleep(start + seq * interval - now())
    writer.edit(seq)
  }
}

const failed = (reason, extra = {}) => ({ ok: false, error: reason, ...extra })

const latencyResult = (latencies, failures, cpu, extra = {}) => {
  if (failures.length > 0) {
    return failed(`${failures.length} clients did not converge; first: ${failures.slice(0, 3).join('; ')}`, { cpu })
  }
  return {
    ok: true,
    metrics: {
      latency_p50_ms: percentile(latencies, 0.5),
      latency_p99_ms: percentile(latencies, 0.99),
      server_cpu_percent: cpu.server_cpu_percent
    },
    details: { samples: latencies.length, ...cpu, ...extra }
  }
}

// --- scenarios -----------------------------------------------------------------------

/** Run one writer at 50 edits/s and 200 subscribers in one room. */
const fanout = async ({ url, cpuWindow, seconds }) => {
  const rate = 50
  const count = Math.round(rate * seconds)
  const writer = new Writer(url, 'fanout')
  const subscribers = Array.from({ length: 200 }, () => new Client(url, 'fanout', { updates: 'record' }))
  await connectAll([writer, ...subscribers])
  await sleep(500)
  log(`fanout: ${subscribers.length} subscribers synced, sending ${count} edits`)

  cpuWindow.start()
  await writeAtRate(writer, count, rate)
  const delivered = await waitUntil(() => subscribers.every((s) => s.updateCount >= count), 30000)
  const cpu = cpuWindow.stop()
  if (!delivered) log('fanout: not every subscriber received every edit within 30 s of the last send')

  const { latencies, failures } = collectLatencies(writer, subscribers, count)
  closeAll([writer, ...subscribers])
  return latencyResult(latencies, failures, cpu, { edits: count, subscribers: subscribers.length })
}

/** Run 100 rooms, each with one writer at 5 edits/s and 4 subscribers. */
const manyRooms = async ({ url, cpuWindow, seconds }) => {
  const rooms = 100
  const rate = 5
  const count = Math.round(rate * seconds)
  const groups = Array.from({ length: rooms }, (_, index) => {
    const room = `many-${index}`
    return {
      writer: new Writer(url, room),
      subscribers: Array.from({ length: 4 }, () => new Client(url, room, { updates: 'record' }))
    }
  })
  const everyone = groups.flatMap((group) => [group.writer, ...group.subscribers])
  await connectAll(everyone)
  await sleep(500)
  log(`many-rooms: ${everyone.length} clients synced, sending ${count} edits per room`)

  cpuWindow.start()
  // Writers start evenly spread over one edit interval, as independent
  // users would, so the server does not see all rooms edit in lockstep.
  const phase = 1000 / rate / rooms
  await Promise.all(groups.map((group, index) => writeAtRate(group.writer, count, rate, index * phase)))
  const subscribers = groups.flatMap((group) => group.subscribers)
  await waitUntil(() => subscribers.every((s) => s.updateCount >= count), 30000)
  const cpu = cpuWindow.stop()

  const latencies = []
  const failures = []
  for (const group of groups) {
    const result = collectLatencies(group.writer, group.subscribers, count)
    latencies.push(...result.latencies)
    failures.push(...result.failures)
  }
  closeAll(everyone)
  return latencyResult(latencies, failures, cpu, { rooms, edits_per_room: count })
}

/** Measure the server's RSS per connection for 2,000 synced, idle connections over 200 rooms. */
const idleMemory = async ({ url, serverPid }) => {
  const connections = 2000
  const rooms = 200
  // One connection first, so that what the server sets up on its first
  // connection (imports, caches, storage) is not charged to the 2,000.
  const warmup = new Client(url, 'idle-warmup')
  await warmup.open()
  warmup.close()
  await sleep(1000)
  const before = readStatusKiB(serverPid, 'VmRSS')

  const clients = Array.from({ length: connections }, (_, index) => new Client(url, `idle-${index % rooms}`))
  const started = now()
  await connectAll(clients)
  const connectSeconds = (now() - started) / 1000
  await sleep(2000)
  const after = readStatusKiB(serverPid, 'VmRSS')
  const open = clients.filter((client) => client.isOpen).length
  closeAll(clients)
  if (open !== connections) return failed(`${connections - open} of ${connections} connections closed while idle`)
  return {
    ok: true,
    metrics: { rss_per_connection_kib: (after - before) / connections },
    details: {
      rss_before_kib: before,
      rss_after_kib: after,
      connections,
      rooms,
      connect_seconds: connectSeconds
    }
  }
}

/**
 * Run one writer that keeps at most 64 edits unacknowledged, and count
 * the deliveries to 50 subscribers.
 *
 * yrelay does not echo an update to its sender and the Node server does,
 * so an edit counts as acknowledged when a dedicated subscriber receives
 * it, the same rule for both servers.
 */
const saturation = async ({ url, cpuWindow, seconds }) => {
  const windowSize = 64
  const writer = new Writer(url, 'saturation')
  let sent = 0
  let stopped = false
  let deliveredInWindow = 0
  const pump = () => {
    while (!stopped && sent - acknowledger.updateCount < windowSize) {
      writer.edit(sent)
      sent += 1
    }
  }
  const acknowledger = new Client(url, 'saturation', { updates: 'record', onUpdate: () => pump() })
  const countDelivery = () => {
    if (!stopped) deliveredInWindow += 1
  }
  const subscribers = Array.from({ length: 50 }, () => new Client(url, 'saturation', { updates: 'record', onUpdate: countDelivery }))
  await connectAll([writer, acknowledger, ...subscribers])
  await sleep(500)
  log(`saturation: ${subscribers.length} subscribers synced, sending for ${seconds} s`)

  cpuWindow.start()
  pump()
  await sleep(seconds * 1000)
  stopped = true
  const cpu = cpuWindow.stop()
  const acknowledged = acknowledger.updateCount
  const drained = await waitUntil(() => subscribers.every((s) => s.updateCount >= sent), 60000)
  if (!drained) log('saturation: not every subscriber received every edit within 60 s of the end')
  log(`saturation: ${sent} edits sent, checking convergence`)

  const failures = []
  for (const [index, client] of [acknowledger, ...subscribers].entries()) {
    client.doc.transact(() => client.replayRecorded())
    client.received = []
    if (client.updateCount !== sent) failures.push(`client ${index} received ${client.updateCount} of ${sent} edits`)
    else if (!docsEqual(client.doc, writer.doc)) failures.push(`client ${index} has a document that differs from the writer's`)
    // Lets the watchdog timer run between clients.
    await sleep(0)
  }
  closeAll([writer, acknowledger, ...subscribers])
  if (failures.length > 0) {
    return failed(`${failures.length} clients did not converge; first: ${failures.slice(0, 3).join('; ')}`, { cpu, sent })
  }
  return {
    ok: true,
    metrics: {
      delivered_updates_per_second: deliveredInWindow / cpu.window_seconds,
      acknowledged_edits_per_second: acknowledged / cpu.window_seconds,
      server_cpu_percent: cpu.server_cpu_percent
    },
    details: { edits_sent: sent, subscribers: subscribers.length, window: windowSize, ...cpu }
  }
}

/**
 * Build a document whose encoded state is at least `targetBytes`: 1,000
 * character chunks inserted at pseudo-random positions, so the text is made
 * of many items, as a long-edited document is, not of one big string.
 */
const buildLargeDocument = (targetBytes) => {
  const doc = new Y.Doc()
  const text = doc.getText('t')
  let seed = 12345
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed / 2147483648
  }
  const alphabet = 'abcdefghijklmnopqrstuvwxyz      '
  const chunk = () => Array.from({ length: 1000 }, () => alphabet[Math.floor(random() * alphabet.length)]).join('')
  let size = 0
  while (size < targetBytes) {
    doc.transact(() => {
      for (let i = 0; i < 200; i++) text.insert(Math.floor(random() * (text.length + 1)), chunk())
    })
    size = Y.encodeStateAsUpdate(doc).length
  }
  return doc
}

/**
 * Find the arrival time at which a storm joiner's document first reached
 * `expectedLength`, by replaying its recorded sync messages in order.
 * Joiners that received the same messages share one replay through `cache`.
 */
const joinCompletedAt = (joiner, expectedLength, cache) => {
  const key = joiner.stormMessages.map(([, content]) => content).join(',')
  if (!cache.has(key)) {
    const replica = { doc: new Y.Doc(), isOpen: false }
    let completedIndex = -1
    joiner.stormMessages.forEach(([, content], index) => {
      if (completedIndex >= 0) return
      applySyncMessage(replica, sharedContent[content])
      if (replica.doc.getText('t').length === expectedLength) completedIndex = index
    })
    cache.set(key, completedIndex)
  }
  const index = cache.get(key)
  return index < 0 ? null : joiner.stormMessages[index][0]
}

/** Upload a ~5 MB document, then let 200 new clients join within one second. */
const joinStorm = async ({ url, serverPid, cpuWindow }) => {
  const joinerCount = 200
  const spreadMs = 1000
  const source = buildLargeDocument(5_000_000)
  const expectedLength = source.getText('t').length
  const stateBytes = Y.encodeStateAsUpdate(source).length
  log(`join-storm: document of ${expectedLength} characters, state ${stateBytes} bytes`)

  // The preloader's reply to the server's step 1 carries the whole document.
  const preloader = new Client(url, 'storm')
  preloader.doc = source
  await preloader.open()
  const verifier = new Client(url, 'storm')
  await verifier.open()
  const loaded = await waitUntil(() => verifier.doc.getText('t').length === expectedLength, 60000, 20)
  closeAll([preloader, verifier])
  if (!loaded) return failed(`the server did not hold the ${stateBytes} byte document within 60 s of the upload`)
  await sleep(2000)

  const rssBefore = readStatusKiB(serverPid, 'VmRSS')
  // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+),
  // so VmHWM afterwards is the peak of the storm alone.
  let peakReset = true
  try {
    writeFileSync(`/proc/${serverPid}/clear_refs`, '5')
  } catch (error) {
    peakReset = false
    log(`join-storm: could not reset VmHWM (${error.message}); using sampled VmRSS only`)
  }
  let sampledPeak = rssBefore
  const sampler = setInterval(() => {
    sampledPeak = Math.max(sampledPeak, readStatusKiB(serverPid, 'VmRSS'))
  }, 20)

  const joiners = Array.from({ length: joinerCount }, () => new Client(url, 'storm', { updates: 'storm' }))
  cpuWindow.start()
  const stormStart = now()
  const joins = joiners.map(async (joiner, index) => {
    await sleep(stormStart + (index * spreadMs) / joinerCount - now())
    await joiner.open(120000)
  })
  const outcomes = await Promise.allSettled(joins)
  const cpu = cpuWindow.stop()
  clearInterval(sampler)
  const hwm = readStatusKiB(serverPid, 'VmHWM')
  sampledPeak = Math.max(sampledPeak, readStatusKiB(serverPid, 'VmRSS'))
  closeAll(joiners)

  const errors = outcomes.filter((outcome) => outcome.status === 'rejected').map((outcome) => outcome.reason.message)
  if (errors.length > 0) return failed(`${errors.length} joiners failed; first: ${errors[0]}`, { cpu })
  const cache = new Map()
  const completions = joiners.map((joiner) => joinCompletedAt(joiner, expectedLength, cache))
  const incomplete = completions.filter((at) => at === null).length
  if (incomplete > 0) return failed(`${incomplete} joiners got step 2 without the whole document`, { cpu })
  const joinSeconds = completions.map((at) => (at - stormStart) / 1000)
  const peakKiB = peakReset ? Math.max(hwm, sampledPeak) : sampledPeak
  return {
    ok: true,
    metrics: {
      all_synced_seconds: Math.max(...joinSeconds),
      server_cpu_seconds: cpu.server_cpu_seconds,
      peak_rss_mib: peakKiB / 1024
    },
    details: {
      joiners: joinerCount,
      document_characters: expectedLength,
      state_bytes: stateBytes,
      join_p50_seconds: percentile(joinSeconds, 0.5),
      rss_before_mib: rssBefore / 1024,
      vmhwm_reset: peakReset,
      vmhwm_mib: hwm / 1024,
      sampled_peak_rss_mib: sampledPeak / 1024,
      ...cpu
    }
  }
}

/**
 * Decode one awareness message into [clientID, clock, state] entries
 * (the y-protocols encoding: count, then per client id, clock and JSON).
 */
const decodeAwareness = (bytes) => {
  const decoder = decoding.createDecoder(bytes)
  decoding.readVarUint(decoder)
  const update = decoding.createDecoder(decoding.readVarUint8Array(decoder))
  const entries = []
  const count = decoding.readVarUint(update)
  for (let i = 0; i < count; i++) {
    const clientID = decoding.readVarUint(update)
    const clock = decoding.readVarUint(update)
    entries.push([clientID, clock, JSON.parse(decoding.readVarString(update))])
  }
  return entries
}

/** Run 200 clients in one room, each sending an awareness update every second. */
const presence = async ({ url, cpuWindow, seconds }) => {
  const clientCount = 200
  const rounds = Math.round(seconds)
  const foreign = new Array(clientCount).fill(0)
  const awarenesses = []
  // The Node server also sends each client its own update back, so the
  // wait below counts only messages whose first state is another client's.
  const countForeign = (index) => (bytes) => {
    const decoder = decoding.createDecoder(bytes)
    decoding.readVarUint(decoder)
    const update = decoding.createDecoder(decoding.readVarUint8Array(decoder))
    if (decoding.readVarUint(update) > 0 && decoding.readVarUint(update) !== awarenesses[index]?.clientID) foreign[index] += 1
  }
  const clients = Array.from({ length: clientCount }, (_, index) =>
    new Client(url, 'presence', { recordAwareness: true, onAwareness: countForeign(index) }))
  clients.forEach((client) => awarenesses.push(new awarenessProtocol.Awareness(client.doc)))
  await connectAll(clients)
  await sleep(500)
  log(`presence: ${clientCount} clients synced, ${rounds} rounds`)

  const sendState = (index, round) => {
    const awareness = awarenesses[index]
    awareness.setLocalState({ user: index, round, t: now() })
    const update = awarenessProtocol.encodeAwarenessUpdate(awareness, [awareness.clientID])
    clients[index].send(encodeMessage(MESSAGE_AWARENESS, (encoder) => encoding.writeVarUint8Array(encoder, update)))
  }
  cpuWindow.start()
  const start = now()
  // Client i sends at i * 5 ms into every second, so the updates are spread
  // evenly as independent users' would be.
  await Promise.all(clients.map(async (_client, index) => {
    for (let round = 0; round < rounds; round++) {
      await sleep(start + round * 1000 + (index * 1000) / clientCount - now())
      sendState(index, round)
    }
  }))
  const senderIds = new Set(awarenesses.map((awareness) => awareness.clientID))
  const expectedPerClient = (clientCount - 1) * rounds
  await waitUntil(() => foreign.every((count) => count >= expectedPerClient), 30000)
  const cpu = cpuWindow.stop()
  awarenesses.forEach((awareness) => awareness.destroy())

  const latencies = []
  const failures = []
  clients.forEach((client, index) => {
    const own = awarenesses[index].clientID
    const seen = new Set()
    for (const [at, bytes] of client.awarenessReceived) {
      for (const [clientID, clock, state] of decodeAwareness(bytes)) {
        if (clientID === own || !senderIds.has(clientID) || state === null || state.t === undefined) continue
        const key = `${clientID}:${clock}`
        if (seen.has(key)) continue
        seen.add(key)
        latencies.push(at - state.t)
      }
    }
    if (seen.size !== expectedPerClient) failures.push(`client ${index} received ${seen.size} of ${expectedPerClient} awareness updates`)
    client.awarenessReceived = []
  })
  closeAll(clients)
  return latencyResult(latencies, failures, cpu, { clients: clientCount, rounds })
}

/** Upload a Yjs update from `--update-file` as one client edit, and read it back whole. */
const seed = async ({ url, room, updateFile, expectedLength }) => {
  const update = readFileSync(updateFile)
  const writer = new Client(url, room)
  await writer.open()
  writer.send(encodeMessage(MESSAGE_SYNC, (encoder) => syncProtocol.writeUpdate(encoder, update)))
  const reader = new Client(url, room)
  await reader.open()
  const complete = await waitUntil(() => reader.doc.getText('t').length === expectedLength, 60000, 20)
  closeAll([writer, reader])
  if (!complete) return failed(`the server did not return the seeded document of ${expectedLength} characters within 60 s`)
  return { ok: true, metrics: {}, details: { update_bytes: update.length } }
}

/**
 * Time from opening a socket until the message that completes the document
 * (`--expected-length` characters) arrives.
 *
 * The client's own Yjs work on that message is left out, as in join-storm,
 * so the figure is the server's. The Node server replies to step 1 before its
 * LevelDB read finishes and sends the stored state as a later update, so
 * "complete" is not always the step 2.
 */
const coldLoad = async ({ url, room, expectedLength }) => {
  const client = new Client(url, room, { updates: 'storm' })
  const started = now()
  await client.open()
  const deadline = started + 60000
  let completedAt = null
  let replayed = 0
  while (completedAt === null && now() < deadline) {
    if (client.stormMessages.length > replayed) {
      replayed = client.stormMessages.length
      completedAt = joinCompletedAt(client, expectedLength, new Map())
    } else {
      await sleep(5)
    }
  }
  client.close()
  if (completedAt === null) return failed(`the document did not reach ${expectedLength} characters within 60 s`)
  return { ok: true, metrics: { load_ms: completedAt - started }, details: { step2_ms: client.syncedAt - started } }
}

const SCENARIOS = {
  fanout,
  'many-rooms': manyRooms,
  'idle-memory': idleMemory,
  saturation,
  'join-storm': joinStorm,
  presence,
  seed,
  'cold-load': coldLoad
}

// --- command line ----------------------------------------------------------------------

const flushAndExit = (code) => {
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)))
}

const main = async () => {
  const { values } = parseArgs({
    options: {
      scenario: { type: 'string' },
      url: { type: 'string' },
      'server-pid': { type: 'string' },
      'clk-tck': { type: 'string', default: '100' },
      seconds: { type: 'string', default: '20' },
      room: { type: 'string', default: 'bench' },
      'update-file': { type: 'string' },
      'expected-length': { type: 'string', default: '0' },
      'limit-seconds': { type: 'string', default: '600' }
    }
  })
  const run = SCENARIOS[values.scenario]
  if (run === undefined) throw new Error(`unknown --scenario ${values.scenario}; expected one of ${Object.keys(SCENARIOS).join(', ')}`)
  if (!values.url || !values.url.startsWith('ws://127.0.0.1:')) throw new Error(`--url must be ws://127.0.0.1:<port>, got ${values.url}`)
  const serverPid = Number.parseInt(values['server-pid'] ?? '', 10)
  if (!Number.isInteger(serverPid)) throw new Error('--server-pid is missing')
  const limitMs = Number(values['limit-seconds']) * 1000
  const watchdog = setTimeout(() => {
    log(`timed out: the scenario ran longer than its limit of ${limitMs} ms`)
    flushAndExit(2)
  }, limitMs)
  const result = await run({
    url: values.url,
    serverPid,
    cpuWindow: new CpuWindow(serverPid, Number(values['clk-tck'])),
    seconds: Number(values.seconds),
    room: values.room,
    updateFile: values['update-file'],
    expectedLength: Number(values['expected-length'])
  })
  clearTimeout(watchdog)
  return { scenario: values.scenario, ...result }
}

main().then((result) => {
  process.stdout.write(JSON.stringify(result) + '\n')
  flushAndExit(0)
}, (error) => {
  log(`failed: ${error && error.stack ? error.stack : error}`)
  flushAndExit(1)
})
