// The server's language ids and the CodeMirror mode for each, loaded on first use (each mode is
// its own chunk, so the first load carries only the session's language).
export const FALLBACK_LANGUAGES = ['python', 'javascript', 'typescript', 'bash', 'c', 'cpp', 'java', 'rust', 'go']

const LABELS = {
  python: 'Python', javascript: 'JavaScript', typescript: 'TypeScript', bash: 'Bash', c: 'C', cpp: 'C++',
  java: 'Java', rust: 'Rust', go: 'Go',
}

const LOADERS = {
  python: async () => (await import('@codemirror/lang-python')).python(),
  javascript: async () => (await import('@codemirror/lang-javascript')).javascript(),
  typescript: async () => (await import('@codemirror/lang-javascript')).javascript({ typescript: true }),
  c: async () => (await import('@codemirror/lang-cpp')).cpp(),
  cpp: async () => (await import('@codemirror/lang-cpp')).cpp(),
  java: async () => (await import('@codemirror/lang-java')).java(),
  rust: async () => (await import('@codemirror/lang-rust')).rust(),
  go: async () => (await import('@codemirror/lang-go')).go(),
  bash: async () => {
    const [{ StreamLanguage }, { shell }] = await Promise.all([
      import('@codemirror/language'), import('@codemirror/legacy-modes/mode/shell'),
    ])
    return StreamLanguage.define(shell)
  },
}

export const ALIASES = { 'c++': 'cpp', py: 'python', python3: 'python', js: 'javascript', node: 'javascript', ts: 'typescript', sh: 'bash' }

export function canonical (id) {
  return ALIASES[id] ?? id
}

export function label (id) {
  return LABELS[id] ?? id
}

/** The CodeMirror extension for a language id, or [] (plain text) for one without a mode. */
export async function loadLanguage (id) {
  const loader = LOADERS[canonical(id)]
  return loader ? loader() : []
}

/** Whether the server runs code (the page says so; without Run, `/api/languages` answers 503). */
export function runAvailable () {
  return document.querySelector('meta[name="run"]')?.content === 'on'
}

/** Language ids the server runs (`GET /api/languages`), else the fixed list. */
export async function serverLanguages () {
  if (!runAvailable()) return FALLBACK_LANGUAGES
  try {
    const r = await fetch('/api/languages')
    if (r.ok) {
      const body = await r.json()
      const names = body.languages.map((l) => l.name)
      if (names.length) return names
    }
  } catch { /* the fixed list below */ }
  return FALLBACK_LANGUAGES
}
