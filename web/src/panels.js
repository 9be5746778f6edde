// The side panels: who is connected (from the server, which knows each connection's role) and
// the output of the newest run (from the document's `runs`, so every participant sees the same).
import { api } from './session.js'

const SAFE_COLOR = /^#[0-9a-fA-F]{3,8}$/

/**
 * Keep `list` showing `GET /api/sessions/{id}/participants`: on every awareness change (debounced)
 * and every few seconds. Awareness alone cannot say roles: a page could claim any role there.
 */
export function watchParticipants (list, sessionId, token, awareness) {
  let timer = null
  let stopped = false
  const refresh = async () => {
    timer = null
    try {
      const { participants } = await api(`/api/sessions/${encodeURIComponent(sessionId)}/participants`, token)
      list.replaceChildren(...participants.map((p) => {
        const li = document.createElement('li')
        const dot = document.createElement('span')
        dot.className = 'dot'
        if (p.color && SAFE_COLOR.test(p.color)) dot.style.backgroundColor = p.color
        const who = document.createElement('span')
        who.className = 'name'
        who.textContent = p.name ?? '(joining)'
        const role = document.createElement('span')
        role.className = 'role'
        role.textContent = p.role
        li.append(dot, who, role)
        return li
      }))
    } catch (err) {
      // Keep the last list; the connection state tells what is wrong. A refusal is final.
      if ([401, 403, 404].includes(err.status)) stop()
    }
  }
  const soon = (delay = 150) => { if (!timer && !stopped) timer = setTimeout(refresh, delay) }
  awareness.on('change', () => soon())
  const interval = setInterval(() => soon(0), 3000)
  const stop = () => { stopped = true; clearInterval(interval); if (timer) clearTimeout(timer) }
  soon(0)
  return stop
}

function block (className, text) {
  const el = document.createElement('pre')
  el.className = className
  el.textContent = text
  return el
}

/** Render one run (a plain object from the `runs` array) into `output`. */
export function renderRun (output, run, byName = (by) => by) {
  if (!run) { output.replaceChildren(block('placeholder', 'Press Run to run the code.')); return }
  const parts = [`${run.language}`, run.timedOut ? 'timed out' : `exit ${run.exitCode}`, `${run.durationMs} ms`]
  if (run.by) parts.push(`by ${byName(run.by)}`)
  if (run.truncated) parts.push('output truncated')
  const head = document.createElement('div')
  head.className = 'run-meta'
  head.textContent = parts.join(' · ')
  const children = [head]
  if (run.stdout) children.push(block('stdout', run.stdout))
  if (run.stderr) children.push(block('stderr', run.stderr))
  if (!run.stdout && !run.stderr) children.push(block('placeholder', '(no output)'))
  output.replaceChildren(...children)
}

export function renderMessage (output, text, className = 'placeholder') {
  output.replaceChildren(block(className, text))
}
