// The interviewer's controls: lock the candidate's editing, switch Run, and a playback scrubber.
// The switches PATCH the session and show the document's `meta` (so every interviewer page follows
// whoever flipped them); playback reads `GET …/playback` into its own read-only area and never
// touches the live editor or document.
import { api } from './session.js'

const STEPS = 1000 // the scrubber's resolution; its end is always "now"
const FAR_FUTURE = '99999999999' // `at` past the end answers the current text and the last row

function toggle (id, text) {
  const input = document.createElement('input')
  input.type = 'checkbox'
  input.id = id
  const label = document.createElement('label')
  label.className = 'switch'
  label.append(input, ` ${text}`)
  return { label, input }
}

/** A checkbox bound to one boolean `meta` key, changed through `PATCH /api/sessions/{id}`. */
function metaSwitch (id, text, key, fallback, { path, token, meta, onError }) {
  const { label, input } = toggle(id, text)
  // While a change is on its way (the PATCH, then the `meta` update over the socket), keep showing
  // what was asked for rather than flicker back; `meta` decides again once it agrees or after 5 s.
  let wanted = null
  let timer = null
  const settle = () => { wanted = null; clearTimeout(timer); show() }
  const show = () => {
    const value = (meta.get(key) ?? fallback) === true
    if (wanted === value) { wanted = null; clearTimeout(timer) }
    input.checked = wanted ?? value
  }
  input.addEventListener('change', async () => {
    wanted = input.checked
    clearTimeout(timer)
    timer = setTimeout(settle, 5000)
    try {
      await api(path, token, { method: 'PATCH', body: JSON.stringify({ [key]: wanted }) })
      show()
    } catch (err) {
      onError(`${text}: ${err.message}`)
      settle()
    }
  })
  return { label, input, show }
}

function playbackPanel (path, token) {
  const section = document.createElement('section')
  section.className = 'playback'
  const range = document.createElement('input')
  range.type = 'range'
  range.id = 'playback'
  range.min = '0'
  range.max = String(STEPS)
  range.value = String(STEPS)
  range.setAttribute('aria-label', 'Playback')
  const live = document.createElement('button')
  live.type = 'button'
  live.id = 'playback-live'
  live.textContent = 'Live'
  live.hidden = true
  const info = document.createElement('div')
  info.id = 'playback-info'
  info.className = 'run-meta'
  const text = document.createElement('pre')
  text.id = 'playback-text'
  text.setAttribute('aria-label', 'Playback text')
  text.hidden = true
  const row = document.createElement('div')
  row.className = 'playback-row'
  row.append(range, live)
  section.append(row, info, text)

  let lastSeq = null
  let asked = 0
  const load = async () => {
    const ask = ++asked
    const step = Number(range.value)
    try {
      if (lastSeq === null || step >= STEPS) {
        const now = await api(`${path}/playback?at=${FAR_FUTURE}`, token)
        lastSeq = now.seq
        if (step >= STEPS) return ask === asked ? now : null
      }
      const seq = Math.max(1, Math.min(lastSeq, 1 + Math.round((step / STEPS) * (lastSeq - 1))))
      const moment = await api(`${path}/playback?seq=${seq}`, token)
      return ask === asked ? moment : null
    } catch (err) {
      if (ask === asked) info.textContent = `Playback failed: ${err.message}`
      return null
    }
  }
  range.addEventListener('input', async () => {
    text.hidden = false
    live.hidden = false
    const moment = await load()
    if (!moment) return
    text.textContent = moment.code
    text.dataset.seq = String(moment.seq)
    const when = new Date(moment.at * 1000).toLocaleTimeString()
    info.textContent = `row ${moment.seq} · ${when} · ${moment.language}`
  })
  // New rows arrive while the interview goes on: ask for the last one again before each scrub.
  const refresh = () => { lastSeq = null }
  range.addEventListener('pointerdown', refresh)
  range.addEventListener('focus', refresh)
  live.addEventListener('click', () => {
    asked++
    range.value = String(STEPS)
    text.hidden = true
    live.hidden = true
    info.textContent = ''
    text.textContent = ''
  })
  return section
}

/**
 * Add the interviewer's controls to the page; answers `update()`, to be called whenever `meta`
 * changes, and `setEnded(ended)`.
 */
export function interviewerControls ({ sessionId, token, meta, header, aside, onError }) {
  const path = `/api/sessions/${encodeURIComponent(sessionId)}`
  const deps = { path, token, meta, onError }
  const lock = metaSwitch('lock', 'Lock editor', 'locked', false, deps)
  const run = metaSwitch('run-enabled', 'Run enabled', 'runEnabled', true, deps)
  header.insertBefore(run.label, document.getElementById('run'))
  header.insertBefore(lock.label, run.label)
  const heading = document.createElement('h2')
  heading.textContent = 'Playback'
  aside.append(heading, playbackPanel(path, token))
  return {
    update (ended) {
      lock.show()
      run.show()
      lock.input.disabled = ended
      run.input.disabled = ended
    },
  }
}
