// A writer appends numbered lines to Y.Text "text" (and sets one Y.Map
// "map" entry per line) for the durability tests.
//
// usage: node write-lines.mjs <serverUrl> <docName> <lineCount> <intervalMs> <mode>
//
// mode "hold": write all lines, wait until an observer client received them
// (so the server has applied them), print {"event": "applied"}, then keep
// both connections open until the server closes them, and print the close
// codes. The Python driver stops the server in between.
//
// mode "stream": print {"event": "connected"} once synced, then write one
// line every <intervalMs> ms, whether or not the server is still up, and
// print what was written. The Python driver kills the server meanwhile.

import {
  createProvider, emitEvent, log, parseArgs, recordCloseCodes, runMain, sleep,
  stateVectorBase64, waitFor, waitForSynced, Y
} from './lib.mjs'

const SYNC_TIMEOUT_MS = 10000
const CLOSE_TIMEOUT_MS = 60000

const lineText = (index) => `line ${index} café ✓\n`

const appendLine = (doc, index) => {
  doc.transact(() => {
    const text = doc.getText('text')
    text.insert(text.length, lineText(index))
    doc.getMap('map').set(`line-${index}`, index)
  })
}

const hold = async (args, writer, writerProvider) => {
  const lineCount = Number(args.lineCount)
  for (let i = 0; i < lineCount; i++) {
    appendLine(writer, i)
    if (Number(args.intervalMs) > 0) await sleep(Number(args.intervalMs))
  }

  // The server forwards an update only after applying it, so once the
  // observer contains every line, the server has applied them all.
  const observer = new Y.Doc()
  const observerProvider = createProvider(args.serverUrl, args.docName, observer)
  await waitFor(() => stateVectorBase64(observer) === stateVectorBase64(writer), {
    timeoutMs: SYNC_TIMEOUT_MS,
    what: 'an observer to receive every line from the server',
    docs: [observer]
  })
  const writerCodes = recordCloseCodes(writerProvider)
  const observerCodes = recordCloseCodes(observerProvider)
  emitEvent('applied', { text: writer.getText('text').toString(), stateVector: stateVectorBase64(writer) })

  await waitFor(() => writerCodes.length > 0 && observerCodes.length > 0, {
    timeoutMs: CLOSE_TIMEOUT_MS,
    what: 'the server to close both connections'
  })
  observerProvider.destroy()
  return { writerCloseCodes: writerCodes, observerCloseCodes: observerCodes }
}

const stream = async (args, writer, writerProvider) => {
  const closeCodes = recordCloseCodes(writerProvider)
  emitEvent('connected', { clientID: writer.clientID })
  const lineCount = Number(args.lineCount)
  for (let i = 0; i < lineCount; i++) {
    appendLine(writer, i)
    await sleep(Number(args.intervalMs))
  }
  log(`wrote ${lineCount} lines`)
  return { linesWritten: lineCount, text: writer.getText('text').toString(), closeCodes }
}

const main = async () => {
  const args = parseArgs(['serverUrl', 'docName', 'lineCount', 'intervalMs', 'mode'])
  const writer = new Y.Doc()
  const writerProvider = createProvider(args.serverUrl, args.docName, writer)
  await waitForSynced(writerProvider, SYNC_TIMEOUT_MS)

  let result
  if (args.mode === 'hold') result = await hold(args, writer, writerProvider)
  else if (args.mode === 'stream') result = await stream(args, writer, writerProvider)
  else throw new Error(`invalid mode "${args.mode}": expected hold or stream`)
  writerProvider.destroy()
  return { clientID: writer.clientID, ...result }
}

runMain(main, { limitMs: 120000 })
