// What the page learns from its URL: the session id from the path, the token and display name
// from the fragment (a fragment never reaches the server, its logs or a proxy).
export function readLocation (loc = window.location) {
  const id = decodeURIComponent(loc.pathname.split('/').filter(Boolean).pop() ?? '')
  const params = new URLSearchParams(loc.hash.slice(1))
  return { id, token: params.get('token') ?? '', name: (params.get('name') ?? '').trim() }
}

/** Keep the chosen name in the fragment so a reload does not ask again. */
export function rememberName (name) {
  const params = new URLSearchParams(window.location.hash.slice(1))
  params.set('name', name)
  history.replaceState(null, '', `${window.location.pathname}${window.location.search}#${params}`)
}

/** The role claim of the token, for the page's own controls only (the server enforces roles). */
export function roleOf (token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    const role = JSON.parse(atob(part)).role
    return ['interviewer', 'candidate', 'observer'].includes(role) ? role : 'observer'
  } catch {
    return 'observer'
  }
}

const COLORS = ['#d9480f', '#1971c2', '#2f9e44', '#9c36b5', '#e8590c', '#0c8599', '#c2255c', '#5f3dc4']

/** A stable colour per name, so a participant keeps theirs across reloads. */
export function colorFor (name) {
  let h = 0
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0
  return COLORS[h % COLORS.length]
}

/** fetch with the session token; answers the parsed body or throws an Error with the server's message. */
export async function api (path, token, init = {}) {
  const headers = { Authorization: `Bearer ${token}`, ...(init.body ? { 'Content-Type': 'application/json' } : {}) }
  const r = await fetch(path, { ...init, headers: { ...headers, ...init.headers } })
  const body = r.status === 204 ? null : await r.json().catch(() => null)
  if (!r.ok) {
    const err = new Error(body?.error?.message ?? `HTTP ${r.status}`)
    err.status = r.status
    err.code = body?.error?.code
    throw err
  }
  return body
}
