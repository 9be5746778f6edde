// The interview page: CodeMirror bound to the session's Y.Text `code` over y-websocket, with
// presence, the shared language (`meta.language`), status, Run and its shared output (`runs`).
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { yCollab } from 'y-codemirror.next'
import { basicSetup } from 'codemirror'
import { EditorView, keymap } from '@codemirror/view'
import { EditorState, Compartment } from '@codemirror/state'
import { indentWithTab } from '@codemirror/commands'
import { indentUnit } from '@codemirror/language'
import { readLocation, rememberName, roleOf, colorFor, api } from './session.js'
import { serverLanguages, runAvailable, loadLanguage, canonical, label } from './languages.js'
import { watchParticipants, renderRun, renderMessage } from './panels.js'
import { interviewerControls } from './controls.js'

const $ = (id) => document.getElementById(id)
// Close codes after which y-websocket stops reconnecting (see docs/websocket-protocol.md).
const FATAL = {
  4401: 'This link is not valid (or has expired).',
  4403: 'This link belongs to another session, or this site may not connect.',
  4404: 'This session does not exist (it may have been deleted).',
  4410: 'This session has expired.',
  4429: 'Too many connection attempts from this address; reload in a minute.',
}

function fatal (message) {
  const box = $('fatal')
  box.textContent = message
  box.hidden = false
}

function askName () {
  const form = $('name-form')
  form.hidden = false
  $('name-input').focus()
  return new Promise((resolve) => {
    form.addEventListener('submit', (ev) => {
      ev.preventDefault()
      const name = $('name-input').value.trim()
      if (!name) return
      form.hidden = true
      resolve(name)
    })
  })
}

function fillLanguages (select, ids) {
  select.replaceChildren(...ids.map((id) => new Option(label(id), id)))
}

async function main () {
  const here = readLocation()
  if (!here.token) {
    fatal('This link has no token. Open the link you were given: it ends in #token=…')
    return
  }
  const role = roleOf(here.token)
  $('role').textContent = role
  const languageIds = serverLanguages()
  const name = here.name || await askName()
  rememberName(name)
  const color = colorFor(name)

  const doc = new Y.Doc()
  const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/sessions`
  const provider = new WebsocketProvider(wsBase, here.id, doc, { params: { token: here.token } })
  provider.awareness.setLocalStateField('user', { name, color, colorLight: `${color}33` })
  const code = doc.getText('code')
  const meta = doc.getMap('meta')
  const runs = doc.getArray('runs')

  const languageSlot = new Compartment()
  const accessSlot = new Compartment()
  const access = (readOnly) => [EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)]
  const view = new EditorView({
    parent: $('editor'),
    state: EditorState.create({
      doc: code.toString(),
      extensions: [
        basicSetup,
        keymap.of([indentWithTab]),
        indentUnit.of('    '),
        languageSlot.of([]),
        accessSlot.of(access(true)), // until the first sync says what the session allows
        yCollab(code, provider.awareness, { undoManager: new Y.UndoManager(code) }),
        EditorView.contentAttributes.of({ 'aria-label': 'Code' }),
        // The page's CSP admits the editor's <style> element by this per-response nonce.
        EditorView.cspNonce.of(document.querySelector('meta[name="style-nonce"]')?.content ?? ''),
      ],
    }),
  })

  const select = $('language')
  const runButton = $('run')
  const output = $('output')
  let synced = false
  let readOnly = true
  let running = false
  let shownLanguage = null
  const canRun = runAvailable()
  if (!canRun) runButton.title = 'Run is off on this server'
  // Shown on every page while the interviewer has locked the candidate's editing.
  const lockedBadge = document.createElement('span')
  lockedBadge.className = 'badge'
  lockedBadge.id = 'locked'
  lockedBadge.dataset.state = 'locked'
  lockedBadge.textContent = 'Locked'
  lockedBadge.hidden = true
  $('status').after(lockedBadge)
  const controls = role === 'interviewer'
    ? interviewerControls({ sessionId: here.id, token: here.token, meta, header: $('run').parentElement,
      aside: document.querySelector('aside'), onError: (message) => renderMessage(output, message, 'stderr') })
    : null

  // Runs in a microtask, never inside a Y observer: y-codemirror may not have applied the same
  // transaction to the editor yet, and a dispatch then would see positions past its text.
  const applyState = () => queueMicrotask(() => {
    const status = meta.get('status') ?? 'active'
    $('status').textContent = status
    $('status').dataset.status = status
    const title = meta.get('title')
    $('title').textContent = title || 'Interview'
    document.title = `${title || 'Interview'} · crdt-server`
    // `locked` and `runEnabled` are the interview controls' meta keys; absent, nothing is locked.
    lockedBadge.hidden = meta.get('locked') !== true
    controls?.update(status === 'ended')
    const locked = meta.get('locked') === true && role === 'candidate'
    const nextReadOnly = !synced || role === 'observer' || status === 'ended' || locked
    if (nextReadOnly !== readOnly) {
      readOnly = nextReadOnly
      view.dispatch({ effects: accessSlot.reconfigure(access(readOnly)) })
    }
    $('editor').dataset.readonly = String(readOnly)
    select.disabled = readOnly
    // the Run switch is the candidate's; the interviewer still runs (the server answers the same)
    const runOff = meta.get('runEnabled') === false && role === 'candidate'
    runButton.disabled = readOnly || running || !canRun || runOff
    const language = canonical(meta.get('language') ?? 'python')
    if (![...select.options].some((o) => o.value === language)) select.add(new Option(label(language), language))
    select.value = language
    if (language !== shownLanguage) {
      shownLanguage = language
      loadLanguage(language).then((ext) => {
        if (shownLanguage === language) view.dispatch({ effects: languageSlot.reconfigure(ext) })
      }, () => { /* no highlighting for this one */ })
    }
  })

  languageIds.then((ids) => {
    const current = select.value
    fillLanguages(select, ids)
    if (current) select.value = current
    applyState()
  })
  select.addEventListener('change', () => {
    if (!readOnly) doc.transact(() => meta.set('language', select.value))
  })

  const showNewestRun = () => {
    const last = runs.length ? runs.get(runs.length - 1) : null
    renderRun(output, last && typeof last.toJSON === 'function' ? last.toJSON() : last)
  }
  runs.observeDeep(showNewestRun)
  meta.observe(applyState)

  runButton.addEventListener('click', async () => {
    running = true
    applyState()
    renderMessage(output, 'Running…')
    try {
      await api(`/api/sessions/${encodeURIComponent(here.id)}/execute`, here.token, { method: 'POST', body: '{}' })
      showNewestRun()
    } catch (err) {
      renderMessage(output, `Run failed: ${err.message}`, 'stderr')
    } finally {
      running = false
      applyState()
    }
  })

  const connection = $('connection')
  provider.on('status', ({ status }) => {
    connection.textContent = status
    connection.dataset.state = status
  })
  provider.on('sync', (isSynced) => {
    if (isSynced && !synced) {
      synced = true
      showNewestRun()
      applyState()
    }
  })
  provider.on('connection-close', (event) => {
    if (event && FATAL[event.code]) {
      fatal(FATAL[event.code])
      connection.textContent = 'closed'
      connection.dataset.state = 'closed'
    }
  })
  watchParticipants($('participants'), here.id, here.token, provider.awareness)
  window.addEventListener('pagehide', () => provider.destroy())
  window.interview = { doc, view, provider } // for tests and the curious
}

main().catch((err) => fatal(`The page failed to start: ${err.message}`))
