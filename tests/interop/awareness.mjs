// Client A (a child process) sets an awareness state that clients B and C
// see. Then A is killed with SIGKILL (mode "kill": the kernel closes its
// socket without a WebSocket close frame) or frozen with SIGSTOP (mode
// "freeze": the socket stays open but A stops renewing its state). Prints
// when B and C saw A's state removed.
//
// usage: node awareness.mjs <serverUrl> <docName> <kill|freeze> <renewMs> <holdMs> <removeTimeoutMs>

import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { createProvider, log, parseArgs, runMain, sleep, waitFor, waitForSynced, Y } from './lib.mjs'

const SYNC_TIMEOUT_MS = 10000

const startPeer = (args) => {
  const script = fileURLToPath(new URL('./awareness-peer.mjs', import.meta.url))
  const child = spawn(process.execPath, [script, args.serverUrl, args.docName, 'A', args.renewMs], {
    stdio: ['pipe', 'pipe', 'inherit']
  })
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  const ready = new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout })
    lines.on('line', (line) => {
      const message = JSON.parse(line)
      if (message.event === 'ready') resolve(message.clientID)
    })
    child.on('exit', (code, signal) => reject(new Error(`awareness peer exited early (code ${code}, signal ${signal})`)))
  })
  const timeout = sleep(SYNC_TIMEOUT_MS).then(() => {
    throw new Error(`awareness peer did not report ready within ${SYNC_TIMEOUT_MS} ms`)
  })
  return { child, exited, ready: Promise.race([ready, timeout]) }
}

// Track when an observer last received client `id`'s state and when it saw
// that state removed.
const watchClient = (observer, id) => {
  const seen = { lastUpdateAt: null, removedAt: null, removedOrigin: null }
  observer.provider.awareness.on('update', ({ added, updated, removed }) => {
    const now = performance.now()
    if (added.includes(id) || updated.includes(id)) {
      seen.lastUpdateAt = now
      seen.removedAt = null
    }
    if (removed.includes(id) && seen.removedAt === null) seen.removedAt = now
  })
  return seen
}

const connectObserver = async (serverUrl, docName, name) => {
  const doc = new Y.Doc()
  const provider = createProvider(serverUrl, docName, doc)
  provider.awareness.setLocalState({ user: { name, color: '#ee6352' } })
  await waitForSynced(provider, SYNC_TIMEOUT_MS)
  return { name, doc, provider }
}

const main = async () => {
  const args = parseArgs(['serverUrl', 'docName', 'mode', 'renewMs', 'holdMs', 'removeTimeoutMs'])
  if (args.mode !== 'kill' && args.mode !== 'freeze') throw new Error(`invalid mode "${args.mode}": expected kill or freeze`)

  const b = await connectObserver(args.serverUrl, args.docName, 'B')
  const peer = startPeer(args)
  try {
    const idA = await peer.ready
    const watchB = watchClient(b, idA)
    await waitFor(() => b.provider.awareness.getStates().has(idA), { timeoutMs: SYNC_TIMEOUT_MS, what: 'B to see A\'s awareness state' })

    // C connects after A set its state, so C gets it from the server's
    // initial awareness message.
    const c = await connectObserver(args.serverUrl, args.docName, 'C')
    const watchC = watchClient(c, idA)
    await waitFor(() => c.provider.awareness.getStates().has(idA), { timeoutMs: SYNC_TIMEOUT_MS, what: 'C to see A\'s awareness state' })
    const stateSeenByB = b.provider.awareness.getStates().get(idA)
    const stateSeenByC = c.provider.awareness.getStates().get(idA)
    log(`B and C see A (client ${idA})`)

    await sleep(Number(args.holdMs))
    const presentAfterHold = {
      B: b.provider.awareness.getStates().has(idA),
      C: c.provider.awareness.getStates().has(idA)
    }

    const actionAt = performance.now()
    peer.child.kill(args.mode === 'kill' ? 'SIGKILL' : 'SIGSTOP')
    log(`A ${args.mode === 'kill' ? 'killed' : 'frozen'}`)
    const lastUpdateB = watchB.lastUpdateAt
    const lastUpdateC = watchC.lastUpdateAt

    let removalError = null
    try {
      await waitFor(() => watchB.removedAt !== null && watchC.removedAt !== null, {
        timeoutMs: Number(args.removeTimeoutMs),
        what: 'B and C to see A\'s awareness state removed',
        describe: () => `B removed=${watchB.removedAt !== null}, C removed=${watchC.removedAt !== null}`
      })
    } catch (error) {
      removalError = error.message
    }
    const relative = (time, since) => (time === null || since === null ? null : time - since)
    const result = {
      mode: args.mode,
      clientA: idA,
      stateSeenByB,
      stateSeenByC,
      presentAfterHold,
      removalError,
      removedAfterActionMs: { B: relative(watchB.removedAt, actionAt), C: relative(watchC.removedAt, actionAt) },
      removedAfterLastUpdateMs: { B: relative(watchB.removedAt, lastUpdateB), C: relative(watchC.removedAt, lastUpdateC) },
      lastUpdateBeforeActionMs: { B: relative(actionAt, lastUpdateB), C: relative(actionAt, lastUpdateC) },
      stillSeesEachOther: {
        B: b.provider.awareness.getStates().has(c.doc.clientID),
        C: c.provider.awareness.getStates().has(b.doc.clientID)
      }
    }
    b.provider.destroy()
    c.provider.destroy()
    return result
  } finally {
    // SIGKILL also ends a stopped process. Closing stdin covers the case
    // where the kill was never sent.
    peer.child.kill('SIGKILL')
    peer.child.stdin.end()
    await Promise.race([peer.exited, sleep(5000)])
  }
}

runMain(main, { limitMs: 120000 })
