// A viewer and an editor on one document, both with y-websocket providers
// that pass their token in the URL. The viewer must receive the editor's
// edits, its own edit must reach no other client, and y-websocket must report the
// relay's permission-denied message.
//
// Usage: node roles.mjs <serverUrl> <docName> <editorToken> <viewerToken>

import { Y, createProvider, log, parseArgs, runMain, sleep, waitFor, waitForSynced } from './lib.mjs'

const TIMEOUT_MS = 10000

const main = async () => {
  const args = parseArgs(['serverUrl', 'docName', 'editorToken', 'viewerToken'])
  const warnings = []
  const originalWarn = console.warn
  console.warn = (...parts) => { warnings.push(parts.join(' ')) }

  const editorDoc = new Y.Doc()
  const viewerDoc = new Y.Doc()
  const editor = createProvider(args.serverUrl, args.docName, editorDoc, { params: { token: args.editorToken } })
  const viewer = createProvider(args.serverUrl, args.docName, viewerDoc, { params: { token: args.viewerToken } })
  await waitForSynced(editor, TIMEOUT_MS)
  await waitForSynced(viewer, TIMEOUT_MS)

  editorDoc.getText('text').insert(0, 'from-editor;')
  await waitFor(() => viewerDoc.getText('text').toString().includes('from-editor;'), {
    timeoutMs: TIMEOUT_MS, what: "the editor's edit at the viewer", docs: [viewerDoc]
  })
  log('viewer received the edit; viewer now edits')

  viewerDoc.getText('text').insert(0, 'from-viewer;')
  await waitFor(() => warnings.some((line) => line.includes('read-only')), {
    timeoutMs: TIMEOUT_MS, what: 'the permission-denied message at the viewer'
  })
  // Time for a wrongly relayed update to arrive at the editor.
  await sleep(500)

  editorDoc.getText('text').insert(editorDoc.getText('text').length, 'later;')
  await waitFor(() => viewerDoc.getText('text').toString().includes('later;'), {
    timeoutMs: TIMEOUT_MS, what: "the editor's later edit at the viewer", docs: [viewerDoc]
  })
  console.warn = originalWarn

  const result = {
    editorText: editorDoc.getText('text').toString(),
    viewerText: viewerDoc.getText('text').toString(),
    viewerConnected: viewer.wsconnected,
    warnings
  }
  editor.destroy()
  viewer.destroy()
  return result
}

runMain(main, { limitMs: 60000 })
