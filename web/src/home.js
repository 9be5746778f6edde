// The start page: create a session (with the API key when the server has one) and show the three
// role links to copy. The key stays in this page's memory only.
import { FALLBACK_LANGUAGES, serverLanguages, label } from './languages.js'

const $ = (id) => document.getElementById(id)

async function main () {
  const form = $('create-form')
  const select = $('create-language')
  const keyRow = $('api-key-row')
  const message = $('create-message')
  const fill = (ids) => select.replaceChildren(...ids.map((id) => new Option(label(id), id, id === 'python', id === 'python')))
  fill(FALLBACK_LANGUAGES)
  serverLanguages().then(fill)

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    message.textContent = 'Creating…'
    const headers = { 'Content-Type': 'application/json' }
    const key = $('api-key').value.trim()
    if (key) headers.Authorization = `Bearer ${key}`
    const body = JSON.stringify({ title: $('create-title').value.trim(), language: select.value })
    let r
    try {
      r = await fetch('/api/sessions', { method: 'POST', headers, body })
    } catch (err) {
      message.textContent = `The server did not answer: ${err.message}`
      return
    }
    const data = await r.json().catch(() => null)
    if (r.status === 401) {
      keyRow.hidden = false
      $('api-key').focus()
      message.textContent = key ? 'That API key was not accepted.' : 'This server needs its API key to create sessions.'
      return
    }
    if (!r.ok) {
      message.textContent = data?.error?.message ?? `HTTP ${r.status}`
      return
    }
    message.textContent = ''
    showLinks(data.links)
  })
}

function showLinks (links) {
  const list = $('links')
  list.replaceChildren(...['interviewer', 'candidate', 'observer'].map((role) => {
    const row = document.createElement('div')
    row.className = 'link-row'
    const name = document.createElement('label')
    name.textContent = role
    name.htmlFor = `link-${role}`
    const input = document.createElement('input')
    input.id = `link-${role}`
    input.readOnly = true
    input.value = links[role]
    const copy = document.createElement('button')
    copy.type = 'button'
    copy.textContent = 'Copy'
    copy.setAttribute('aria-label', `Copy the ${role} link`)
    copy.addEventListener('click', async () => {
      input.select()
      try { await navigator.clipboard.writeText(input.value); copy.textContent = 'Copied' } catch { copy.textContent = 'Select and copy' }
    })
    const open = document.createElement('a')
    open.href = links[role]
    open.target = '_blank'
    open.rel = 'noopener noreferrer'
    open.textContent = 'Open'
    open.setAttribute('aria-label', `Open as ${role}`)
    row.append(name, input, copy, open)
    return row
  }))
  $('links-section').hidden = false
}

main()
